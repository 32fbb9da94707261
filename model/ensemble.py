"""``ensemble``: a deep ensemble (Lakshminarayanan et al. 2017) of independently initialised
networks trained on the same batches.

Members are deterministic FNOs trained with relative L2 (``ensemble_member="fno"``, the default)
or PNO-R networks with mean and scale heads trained with the energy score
(``ensemble_member="pno-reparam"``, the Gaussian members of the original paper). The predictive
distribution is the uniform mixture of the members' predictive distributions: a draw for one input
picks a member uniformly at random and returns its prediction (FNO members) or a draw from its
Gaussian (PNO-R members). With FNO members a sample takes at most ``M`` distinct values per input
and the whole spread is the members' disagreement (epistemic); Gaussian members add their own
noise (aleatoric), and :meth:`DeepEnsemble.posterior_draws` gives both parts.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from model.fno import FNO
from model.methods import MethodConfig, Surrogate, check_n_samples
from model.metrics import relative_l2
from model.reparam import ReparamPNO


def member_seed(seed: int, k: int) -> int:
    """Seed of member ``k`` for ensemble seed ``seed`` (distinct for k < 1000)."""
    return seed * 1000 + k


class DeepEnsemble(Surrogate):
    """``config.ensemble_size`` members in ``self.members``: FNOs (dropout 0) or PNO-Rs."""

    method = "ensemble"
    probabilistic = True
    posterior = "members"

    def __init__(self, config: MethodConfig, seed: int | None = None) -> None:
        super().__init__(config)
        self.gaussian = config.ensemble_member == "pno-reparam"
        self.posterior = ("members (PNO-R members: their Gaussian noise is the aleatoric part)"
                          if self.gaussian else "members (FNO members: no noise model)")
        seeds = [None if seed is None else member_seed(seed, k)
                 for k in range(config.ensemble_size)]
        if self.gaussian:
            member_cfg = replace(config, method="pno-reparam")
            self.members = nn.ModuleList(ReparamPNO(member_cfg, seed=s) for s in seeds)
        else:
            backbone = replace(config.backbone, dropout=0.0)
            self.members = nn.ModuleList(FNO(backbone, seed=s) for s in seeds)

    def set_normalization(self, x: Tensor, y: Tensor) -> None:
        for member in self.members:
            member.set_normalization(x, y)

    def forward(self, x: Tensor) -> Tensor:
        """Mean of the members' predictions: (B, C_in, *spatial) -> (B, C_out, *spatial)."""
        return torch.stack([member(x) for member in self.members]).mean(dim=0)

    def _moments(self, k: int, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Member ``k``'s mean and scale (None for a deterministic member)."""
        if self.gaussian:
            return self.members[k].heads(x)
        return self.members[k](x), None

    def sample(self, x: Tensor, n_samples: int,
               generator: torch.Generator | None = None) -> Tensor:
        """(B, C_in, *spatial) -> (S, B, C_out, *spatial): draw (s, b) comes from member
        ``k[s, b]``, with ``k`` uniform on the members and independent over s and b, drawn from
        ``generator`` (the global RNG when None), then, for Gaussian members, ``mean + scale *
        eps``. Only members that are drawn are evaluated."""
        check_n_samples(n_samples)
        m = len(self.members)
        device = x.device if generator is None else generator.device
        pick = torch.randint(m, (n_samples, x.shape[0]), generator=generator, device=device)
        pick = pick.to(x.device)
        used = torch.unique(pick).tolist()
        moments = [self._moments(k, x) for k in used]
        means = torch.stack([mu for mu, _ in moments])  # (U, B, C_out, *spatial)
        # position of each member in ``used``
        slot = torch.full((m,), -1, dtype=torch.long, device=x.device)
        slot[used] = torch.arange(len(used), device=x.device)
        batch = torch.arange(x.shape[0], device=x.device).expand(n_samples, -1)
        out = means[slot[pick], batch]
        if self.gaussian:
            scales = torch.stack([sc for _, sc in moments])[slot[pick], batch]
            eps = torch.randn(out.shape, generator=generator, dtype=out.dtype,
                              device=device).to(out.device)
            out = out + scales * eps
        return out

    def posterior_draws(self, x: Tensor, n_draws: int | None = None,
                        generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Every member once (``n_draws`` is ignored: the posterior is the M members): means and
        variances (M, B, C_out, *spatial); variance 0 for FNO members."""
        moments = [self._moments(k, x) for k in range(len(self.members))]
        means = torch.stack([mu for mu, _ in moments])
        if not self.gaussian:
            return means, torch.zeros_like(means)
        return means, torch.stack([sc for _, sc in moments]).square()

    def training_loss(self, x: Tensor, y: Tensor, *, n_train: int,
                      generator: torch.Generator | None = None) -> Tensor:
        """Sum over members of each member's own loss (relative L2, or the energy score for
        Gaussian members), so member k's parameters get exactly the gradient of its own loss."""
        if self.gaussian:
            return torch.stack([member.training_loss(x, y, n_train=n_train, generator=generator)
                                for member in self.members]).sum()
        return torch.stack([relative_l2(member(x), y).mean() for member in self.members]).sum()

    def clip_gradients(self, max_norm: float) -> None:
        """Clip each member's gradient norm on its own, so members stay independent."""
        for member in self.members:
            torch.nn.utils.clip_grad_norm_(member.parameters(), max_norm)
