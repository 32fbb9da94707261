"""``variational``: an FNO with Bayesian spectral weights (Bayes by backprop, Blundell et al. 2015).

Every real entry of every Fourier layer's weight (the real and imaginary parts of the complex
weights, stored as real pairs) has a Gaussian posterior ``N(mu, exp(log_var))``; the lifting, skip
and projection layers stay deterministic. ``forward`` uses the posterior means; ``sample`` draws one
set of spectral weights per sample index (shared across the batch) by reparameterisation,
``mu + exp(log_var / 2) * eps``, so the ELBO trains through the draws.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor, nn

from model.fno import FNO, FNOConfig, SpectralConv1d, SpectralConv2d
from model.methods import MethodConfig, Surrogate, check_n_samples
from model.metrics import relative_l2

#: initial posterior std relative to the weight scale 1 / (C_in * C_out) of the FNO initialisation:
#: small, so that training starts as (almost) the deterministic FNO with the same seed
INIT_REL_STD = 0.1


class _GaussianWeight(nn.Module):
    """Mixin for a spectral layer: adds ``log_var`` beside its ``weight`` (the posterior mean)."""

    weight: nn.Parameter

    def __init__(self, in_channels: int, out_channels: int, modes: int) -> None:
        super().__init__(in_channels, out_channels, modes)  # type: ignore[call-arg]
        #: the FNO initialisation's weight scale; the prior's std is given relative to it
        self.weight_scale = 1.0 / (in_channels * out_channels)
        log_var = 2.0 * math.log(INIT_REL_STD * self.weight_scale)
        self.log_var = nn.Parameter(torch.full_like(self.weight, log_var))

    def draw(self, n_samples: int, generator: torch.Generator | None) -> Tensor:
        """``n_samples`` weights from the posterior: (S, *weight.shape)."""
        eps = torch.randn((n_samples, *self.weight.shape), generator=generator,
                          dtype=self.weight.dtype, device=self.weight.device)
        return self.weight + torch.exp(0.5 * self.log_var) * eps

    def kl(self, prior_std: float) -> Tensor:
        """KL(posterior || N(0, (prior_std * weight_scale)^2)) summed over the entries (closed
        form); a prior relative to the initialisation's scale 1 / (C_in * C_out), so that one
        ``prior_std`` suits every width."""
        var_p = (prior_std * self.weight_scale) ** 2
        return 0.5 * (math.log(var_p) - self.log_var
                      + (self.log_var.exp() + self.weight.square()) / var_p - 1.0).sum()


class BayesSpectralConv1d(_GaussianWeight, SpectralConv1d):
    """:class:`SpectralConv1d` with a Gaussian posterior on its weights."""


class BayesSpectralConv2d(_GaussianWeight, SpectralConv2d):
    """:class:`SpectralConv2d` with a Gaussian posterior on its weights."""


class BayesianFNO(FNO):
    """An FNO (dropout 0) whose Fourier layers are Bayesian. With the same seed its posterior means
    equal the weights of ``FNO(config, seed)``: the ``log_var`` initialisation draws no numbers."""

    spectral_layers = (BayesSpectralConv1d, BayesSpectralConv2d)

    def __init__(self, config: FNOConfig, prior_std: float, seed: int | None = None) -> None:
        if config.dropout != 0.0:
            raise ValueError(f"BayesianFNO has no dropout, got dropout={config.dropout}")
        super().__init__(config, seed=seed)
        self.prior_std = prior_std

    def kl(self) -> Tensor:
        """KL divergence of the posterior from the prior, summed over all Bayesian weights."""
        return torch.stack([layer.kl(self.prior_std) for layer in self.spectral]).sum()

    def sample(self, x: Tensor, n_samples: int,
               generator: torch.Generator | None = None) -> Tensor:
        """(B, C_in, *spatial) -> (S, B, C_out, *spatial), one posterior draw of the spectral
        weights per sample index, shared across the batch.

        The lifting is shared and each draw is one pass of the B inputs through the layers. On
        CPU this beats folding the S draws into the batch (one pass of S * B fields with
        per-sample weights in a batched matmul): the S-fold larger activations fall out of cache,
        e.g. 128 vs 190 ms at 64x64, width 32, B = 8, S = 3 on one thread; without autograd it
        also holds one pass's activations and one weight draw at a time, not S.
        """
        check_n_samples(n_samples)
        lifted = self._lift(x)
        out = []
        for _ in range(n_samples):  # draws in sample-major, then layer order
            weights = [layer.draw(1, generator)[0] for layer in self.spectral]
            out.append(self._body(lifted, None, stochastic=False, weights=weights))
        return torch.stack(out)


class VariationalFNO(Surrogate):
    """Variational FNO trained on a tempered ELBO: relative L2 of one posterior draw per batch
    plus ``kl_weight * KL / n_train``. The relative L2 is not a log-likelihood (it is of order
    0.01-1 per sample while the KL over millions of spectral weights is of order 1e6 nats), so
    with ``kl_weight`` near 1 the KL pulls the spectral weights to the prior and the model falls
    back to its skip path; the default weight is small (see ``MethodConfig``)."""

    method = "variational"
    probabilistic = True
    posterior = "spectral weights (Gaussian posterior; no noise model)"

    def __init__(self, config: MethodConfig, seed: int | None = None) -> None:
        super().__init__(config)
        self.net = BayesianFNO(replace(config.backbone, dropout=0.0), config.prior_std, seed=seed)

    def set_normalization(self, x: Tensor, y: Tensor) -> None:
        self.net.set_normalization(x, y)

    def forward(self, x: Tensor) -> Tensor:
        """Prediction with the posterior means: (B, C_in, *spatial) -> (B, C_out, *spatial)."""
        return self.net(x)

    def kl(self) -> Tensor:
        return self.net.kl()

    def sample(self, x: Tensor, n_samples: int,
               generator: torch.Generator | None = None) -> Tensor:
        return self.net.sample(x, n_samples, generator)

    def posterior_draws(self, x: Tensor, n_draws: int,
                        generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """One weight draw per draw; each gives a deterministic field (variance 0)."""
        means = self.net.sample(x, n_draws, generator)
        return means, torch.zeros_like(means)

    def training_loss(self, x: Tensor, y: Tensor, *, n_train: int,
                      generator: torch.Generator | None = None) -> Tensor:
        if n_train < 1:
            raise ValueError(f"n_train must be >= 1, got {n_train}")
        fit = relative_l2(self.net.sample(x, 1, generator)[0], y).mean()
        return fit + self.config.kl_weight * self.kl() / n_train
