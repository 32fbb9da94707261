"""``ensemble``: a deep ensemble (Lakshminarayanan et al. 2017) of independently initialised
deterministic FNOs, each trained with relative L2 on the same batches.

The predictive distribution is the uniform mixture of the members' point predictions: a draw for
one input picks a member uniformly at random and returns its prediction. With ``M`` members a
sample therefore takes at most ``M`` distinct values per input, and the spread is the members'
disagreement (epistemic uncertainty only; no member models noise).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from model.fno import FNO
from model.methods import MethodConfig, Surrogate, check_n_samples
from model.metrics import relative_l2


def member_seed(seed: int, k: int) -> int:
    """Seed of member ``k`` for ensemble seed ``seed`` (distinct for k < 1000)."""
    return seed * 1000 + k


class DeepEnsemble(Surrogate):
    """``config.ensemble_size`` FNOs (dropout 0) in ``self.members``."""

    method = "ensemble"
    probabilistic = True

    def __init__(self, config: MethodConfig, seed: int | None = None) -> None:
        super().__init__(config)
        backbone = replace(config.backbone, dropout=0.0)
        self.members = nn.ModuleList(
            FNO(backbone, seed=None if seed is None else member_seed(seed, k))
            for k in range(config.ensemble_size))

    def set_normalization(self, x: Tensor, y: Tensor) -> None:
        for member in self.members:
            member.set_normalization(x, y)

    def forward(self, x: Tensor) -> Tensor:
        """Mean of the members' predictions: (B, C_in, *spatial) -> (B, C_out, *spatial)."""
        return torch.stack([member(x) for member in self.members]).mean(dim=0)

    def sample(self, x: Tensor, n_samples: int,
               generator: torch.Generator | None = None) -> Tensor:
        """(B, C_in, *spatial) -> (S, B, C_out, *spatial): draw (s, b) is the prediction of member
        ``k[s, b]``, with ``k`` uniform on the members and independent over s and b, drawn from
        ``generator`` (the global RNG when None). Only members that are drawn are evaluated."""
        check_n_samples(n_samples)
        m = len(self.members)
        device = x.device if generator is None else generator.device
        pick = torch.randint(m, (n_samples, x.shape[0]), generator=generator, device=device)
        pick = pick.to(x.device)
        used = torch.unique(pick).tolist()
        preds = torch.stack([self.members[k](x) for k in used])  # (U, B, C_out, *spatial)
        # position of each member in ``used``
        slot = torch.full((m,), -1, dtype=torch.long, device=x.device)
        slot[used] = torch.arange(len(used), device=x.device)
        batch = torch.arange(x.shape[0], device=x.device).expand(n_samples, -1)
        return preds[slot[pick], batch]

    def training_loss(self, x: Tensor, y: Tensor, *, n_train: int,
                      generator: torch.Generator | None = None) -> Tensor:
        """Sum over members of each member's mean relative L2, so member k's parameters get
        exactly the gradient of its own loss."""
        return torch.stack([relative_l2(member(x), y).mean() for member in self.members]).sum()

    def clip_gradients(self, max_norm: float) -> None:
        """Clip each member's gradient norm on its own, so members stay independent."""
        for member in self.members:
            torch.nn.utils.clip_grad_norm_(member.parameters(), max_norm)
