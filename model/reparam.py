"""``pno-reparam``: the PNO-R of Bulte, Scholl and Kutyniok (2025).

One deterministic FNO predicts two fields per output channel, a mean and a scale; the predictive
distribution is pointwise Gaussian, and samples are drawn by reparameterisation,
``mean + scale * eps`` with ``eps ~ N(0, 1)`` independent at every point, so the energy-score loss
trains both heads through the draws.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from model.fno import FNO
from model.methods import MethodConfig, Surrogate, check_n_samples, scaled_energy_score

#: smallest scale, in units of the training targets' std: keeps the spread (and the energy score's
#: pair term) from collapsing to exactly zero
SCALE_FLOOR = 1e-3


class ReparamPNO(Surrogate):
    """Mean and scale heads on one FNO (``out_channels = 2 * C_out``, no dropout).

    The backbone's outputs are de-normalised by its ``out_mean``/``out_std`` buffers. The first
    ``C_out`` channels are the mean head, in physical units as they come. The scale head is read in
    normalised units ``z = (raw - out_mean) / out_std`` (the affine map is exact up to rounding) and
    mapped to ``out_std * (softplus(z) + SCALE_FLOOR)``, so the scale has the units of the targets
    and starts at about ``0.7 * out_std``.
    """

    method = "pno-reparam"
    probabilistic = True

    def __init__(self, config: MethodConfig, seed: int | None = None) -> None:
        super().__init__(config)
        bb = config.backbone
        self.net = FNO(replace(bb, out_channels=2 * bb.out_channels, dropout=0.0), seed=seed)

    def set_normalization(self, x: Tensor, y: Tensor) -> None:
        """Scalar statistics of inputs ``x`` (B, C_in, *spatial) and targets ``y``."""
        self.net.set_normalization(x, y)

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and scale of the pointwise Gaussian: (B, C_in, *spatial) -> two (B, C_out,
        *spatial) in target units, the scale > 0."""
        raw = self.net(x)
        c = self.config.backbone.out_channels
        z = (raw[:, c:] - self.net.out_mean) / self.net.out_std
        return raw[:, :c], self.net.out_std * (F.softplus(z) + SCALE_FLOOR)

    def forward(self, x: Tensor) -> Tensor:
        """The mean head (B, C_out, *spatial)."""
        return self.heads(x)[0]

    def sample(self, x: Tensor, n_samples: int,
               generator: torch.Generator | None = None) -> Tensor:
        """``mean + scale * eps``: (S, B, C_out, *spatial), ``eps`` from ``generator`` (the global
        RNG when None). Differentiable in the weights."""
        check_n_samples(n_samples)
        mean, scale = self.heads(x)
        eps = torch.randn((n_samples, *mean.shape), generator=generator, dtype=mean.dtype,
                          device=mean.device)
        return mean + scale * eps

    def training_loss(self, x: Tensor, y: Tensor, *, n_train: int,
                      generator: torch.Generator | None = None) -> Tensor:
        """Fair energy score over ``config.train_samples`` draws, in units of the target std."""
        samples = self.sample(x, self.config.train_samples, generator)
        return scaled_energy_score(samples, y, self.net.out_std)
