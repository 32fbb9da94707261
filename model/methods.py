"""The method zoo: every way of putting (or not putting) uncertainty on a neural PDE surrogate,
behind one interface.

A :class:`Surrogate` maps inputs ``(B, C_in, *spatial)`` to outputs ``(B, C_out, *spatial)``:

- ``forward(x)``: the point prediction (deterministic, whatever ``.train()`` says);
- ``sample(x, n_samples, generator)``: ``(S, B, C_out, *spatial)`` draws from the predictive
  distribution; a deterministic method raises instead of faking a spread;
- ``training_loss(x, y, n_train=..., generator=...)``: the method's own criterion (relative L2,
  energy score, ELBO), so that one trainer trains them all;
- ``set_normalization(x, y)``: scalar statistics of the training split, stored as buffers.

Methods are built by name from a :class:`MethodConfig`, which checkpoints store, so a model reloads
without the training code guessing. Implementations outside this module are imported lazily.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from model.fno import FNO, FNOConfig
from model.metrics import energy_score, relative_l2

# name -> "module:Class"; the class's ``method`` attribute equals the name
METHODS: dict[str, str] = {
    "fno": "model.methods:DeterministicFNO",
    "pno-dropout": "model.methods:DropoutPNO",
    "pno-reparam": "model.reparam:ReparamPNO",
    "variational": "model.variational:VariationalFNO",
    "mc-dropout": "model.methods:MCDropoutFNO",
    "ensemble": "model.ensemble:DeepEnsemble",
    "deeponet": "model.deeponet:DeepONet",
}


ENSEMBLE_MEMBERS = ("fno", "pno-reparam")


@dataclass(frozen=True)
class MethodConfig:
    """Everything that rebuilds a method's network (stored in checkpoints).

    ``backbone`` sizes the FNO that most methods are built on (its ``dropout`` is the rate of the
    dropout methods); the other fields belong to one method each and are ignored by the rest.
    """

    method: str
    backbone: FNOConfig = field(default_factory=FNOConfig)
    train_samples: int = 3  # samples per input in the energy score (Bulte et al. use 3)
    ensemble_size: int = 5
    ensemble_member: str = "fno"  # "fno" (deterministic) or "pno-reparam" (Gaussian heads)
    kl_weight: float = 1e-6  # variational: weight of KL / n_train in the (tempered) ELBO
    prior_std: float = 1.0  # variational: std of the Gaussian prior on the spectral weights
    deeponet_basis: int = 64
    deeponet_width: int = 128
    deeponet_layers: int = 3
    resolution: tuple[int, ...] = ()  # training grid (DeepONet's sensor layout)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {sorted(METHODS)}")
        if isinstance(self.backbone, dict):  # rebuilt from a checkpoint
            object.__setattr__(self, "backbone", FNOConfig(**self.backbone))
        object.__setattr__(self, "resolution", tuple(self.resolution))
        if self.train_samples < 2:
            raise ValueError(f"the energy score needs train_samples >= 2, got {self.train_samples}")
        if self.ensemble_member not in ENSEMBLE_MEMBERS:
            raise ValueError(f"ensemble_member must be one of {ENSEMBLE_MEMBERS}, "
                             f"got {self.ensemble_member!r}")
        for name in ("ensemble_size", "deeponet_basis", "deeponet_width", "deeponet_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kl_weight < 0 or self.prior_std <= 0:
            raise ValueError(f"kl_weight must be >= 0 and prior_std > 0, got {self.kl_weight}, "
                             f"{self.prior_std}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodConfig:
        return cls(**data)


class Surrogate(nn.Module):
    """Base class of every method; see the module docstring for the contract."""

    method: ClassVar[str]
    #: True when :meth:`sample` draws a distribution; a deterministic method raises there
    probabilistic: ClassVar[bool] = False
    #: what :meth:`posterior_draws` draws over (weights, members, masks); None: no such structure
    posterior: ClassVar[str | None] = None

    def __init__(self, config: MethodConfig) -> None:
        super().__init__()
        if config.method != self.method:
            raise ValueError(f"{type(self).__name__} implements {self.method!r}, "
                             f"got a config for {config.method!r}")
        self.config = config

    @property
    def in_channels(self) -> int:
        return self.config.backbone.in_channels

    def set_normalization(self, x: Tensor, y: Tensor) -> None:
        raise NotImplementedError

    def sample(self, x: Tensor, n_samples: int,
               generator: torch.Generator | None = None) -> Tensor:
        raise ValueError(f"{self.method!r} is deterministic and has no predictive distribution; "
                         "use forward() for its point prediction")

    def posterior_draws(self, x: Tensor, n_draws: int,
                        generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Per draw ``k`` from the posterior over weights or members, the conditional mean and
        variance of the output given that draw: two (K, B, C_out, *spatial). The law of total
        variance splits the predictive variance over them (:mod:`model.decomposition`)."""
        raise ValueError(f"{self.method!r} has no posterior over weights or members: its "
                         "predictive variance does not split into aleatoric and epistemic parts")

    def training_loss(self, x: Tensor, y: Tensor, *, n_train: int,
                      generator: torch.Generator | None = None) -> Tensor:
        """Mean loss of a batch (a scalar); ``n_train`` is the size of the training split."""
        raise NotImplementedError

    def clip_gradients(self, max_norm: float) -> None:
        """Clip the global gradient norm (an ensemble clips each member on its own)."""
        torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm)


def check_n_samples(n_samples: int) -> None:
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")


def scaled_energy_score(samples: Tensor, y: Tensor, out_std: Tensor) -> Tensor:
    """Mean fair energy score of ``samples`` (S, B, ...) against ``y`` (B, ...), in units of the
    training targets' std (so learning rates carry across PDEs)."""
    return energy_score(samples, y, fair=True).mean() / out_std


class _FNOMethod(Surrogate):
    """Methods that are one FNO (with or without dropout) trained with different criteria."""

    dropout: ClassVar[bool] = False

    def __init__(self, config: MethodConfig, seed: int | None = None) -> None:
        super().__init__(config)
        backbone = config.backbone if self.dropout else replace(config.backbone, dropout=0.0)
        if self.dropout and backbone.dropout <= 0:
            raise ValueError(f"{self.method!r} needs backbone dropout > 0, got {backbone.dropout}")
        self.net = FNO(backbone, seed=seed)

    def set_normalization(self, x: Tensor, y: Tensor) -> None:
        self.net.set_normalization(x, y)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DeterministicFNO(_FNOMethod):
    """``fno``: the deterministic baseline, trained with relative L2; no uncertainty."""

    method = "fno"

    def training_loss(self, x: Tensor, y: Tensor, *, n_train: int,
                      generator: torch.Generator | None = None) -> Tensor:
        return relative_l2(self.net(x), y).mean()


class DropoutPNO(_FNOMethod):
    """``pno-dropout`` (PNO-D, Bulte, Scholl and Kutyniok 2025): dropout in the lifted features,
    the Fourier modes and the projection, kept on when sampling, trained with the energy score
    over ``train_samples`` draws per input."""

    method = "pno-dropout"
    probabilistic = True
    dropout = True

    def sample(self, x: Tensor, n_samples: int,
               generator: torch.Generator | None = None) -> Tensor:
        check_n_samples(n_samples)
        return self.net.sample(x, n_samples, generator)

    def training_loss(self, x: Tensor, y: Tensor, *, n_train: int,
                      generator: torch.Generator | None = None) -> Tensor:
        samples = self.net.sample(x, self.config.train_samples, generator)
        return scaled_energy_score(samples, y, self.net.out_std)


class MCDropoutFNO(DropoutPNO):
    """``mc-dropout`` (Gal and Ghahramani 2016): the same dropout network trained with relative L2
    on one dropout draw per input, sampled at inference."""

    method = "mc-dropout"
    posterior = "dropout masks (an approximate weight posterior; no noise model)"

    def posterior_draws(self, x: Tensor, n_draws: int,
                        generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """One dropout mask per draw; each draw is a deterministic field (variance 0)."""
        means = self.sample(x, n_draws, generator)
        return means, torch.zeros_like(means)

    def training_loss(self, x: Tensor, y: Tensor, *, n_train: int,
                      generator: torch.Generator | None = None) -> Tensor:
        return relative_l2(self.net.sample(x, 1, generator)[0], y).mean()


def method_class(name: str) -> type[Surrogate]:
    """The class implementing method ``name`` (imported on first use)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    module, _, cls = METHODS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_surrogate(config: MethodConfig | dict[str, Any], seed: int | None = None) -> Surrogate:
    """A freshly initialised network for ``config`` (reproducible under ``seed``)."""
    if isinstance(config, dict):
        config = MethodConfig.from_dict(config)
    return method_class(config.method)(config, seed=seed)
