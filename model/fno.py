"""Fourier neural operator (Li et al. 2021) with optional dropout for the PNO-D of Bulte, Scholl and
Kutyniok (2025).

Tensors are channel-first: inputs ``(B, C_in, H, W)``, outputs ``(B, C_out, H, W)``, samples
``(S, B, C_out, H, W)``. Inputs and outputs are in physical units; the model normalises internally
with scalar statistics stored as buffers, so a checkpoint rebuilds it without the training data and
the same weights evaluate on a finer grid.

Stochasticity is explicit: ``forward(x)`` is deterministic whatever ``.train()`` says, and
``sample(x, n_samples)`` draws dropout masks (Fourier space, lifting and projection) on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class FNOConfig:
    """Everything needed to rebuild an :class:`FNO` (stored in checkpoints)."""

    in_channels: int = 1
    out_channels: int = 1
    dim: int = 2  # 1 for fields on a line (B, C, W), 2 for fields on a plane (B, C, H, W)
    width: int = 32
    modes: int = 8
    n_layers: int = 4
    padding: int = 8
    projection_width: int = 64
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("in_channels", "out_channels", "width", "modes", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2, got {self.dim}")
        if self.padding < 0:
            raise ValueError(f"padding must be >= 0, got {self.padding}")

    def to_dict(self) -> dict:
        return asdict(self)


def _dropout_mask(shape: tuple[int, ...], p: float, like: Tensor,
                  generator: torch.Generator | None) -> Tensor:
    """Inverted-dropout mask (values 0 or 1/(1-p)) drawn from ``generator`` (global RNG if None)."""
    keep = torch.empty(shape, dtype=like.dtype, device=like.device)
    keep.bernoulli_(1.0 - p, generator=generator)
    return keep / (1.0 - p)


class SpectralConv1d(nn.Module):
    """Linear map on the lowest ``modes`` Fourier coefficients of a 1D field (per mode a complex
    matrix over channels, applied as a batched matmul with the mode axis leading)."""

    def __init__(self, in_channels: int, out_channels: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1.0 / (in_channels * out_channels)
        self.weight = nn.Parameter(scale * torch.rand(modes, in_channels, out_channels, 2))

    def forward(self, x: Tensor, mask: Tensor | None = None,
                weight: Tensor | None = None) -> Tensor:
        """x: (N, C_in, W) real -> (N, C_out, W); ``mask`` (N, C_out, m) scales the modes;
        ``weight`` (of ``self.weight``'s shape, e.g. a posterior draw) replaces ``self.weight``."""
        w, m = x.shape[-1], self.modes
        if m > w // 2 + 1:
            raise ValueError(f"{m} modes need at least {2 * m - 2} points, got {w}")
        x_ft = torch.fft.rfft(x, norm="ortho")[..., :m]  # (N, Ci, m)
        weight = torch.view_as_complex(self.weight if weight is None else weight)
        # contiguous: complex bmm on a strided operand falls back to one copy per matrix on CPU
        out = torch.matmul(x_ft.permute(2, 0, 1).contiguous(), weight)
        out = out.permute(1, 2, 0)  # (N, Co, m)
        if mask is not None:
            out = out * mask
        return torch.fft.irfft(out, n=w, norm="ortho")  # zero-pads modes >= m


class SpectralConv2d(nn.Module):
    """Linear map on the lowest ``modes`` x ``modes`` Fourier coefficients (both signs of ky).

    The contraction over channels is a batched complex matmul with the mode axis leading, which on
    CPU is much faster than the equivalent ``einsum("bixy,ioxy->boxy")``.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1.0 / (in_channels * out_channels)
        # (2 corner blocks, modes*modes, in, out) stored as real pairs for optimiser compatibility
        weight = scale * torch.rand(2, modes * modes, in_channels, out_channels, 2)
        self.weight = nn.Parameter(weight)

    def forward(self, x: Tensor, mask: Tensor | None = None,
                weight: Tensor | None = None) -> Tensor:
        """x: (N, C_in, H, W) real -> (N, C_out, H, W); ``mask`` (N, C_out, 2m, m) scales modes;
        ``weight`` (of ``self.weight``'s shape, e.g. a posterior draw) replaces ``self.weight``.

        Equal to ``irfft2(W * rfft2(x))`` with all other modes zero, computed as 1D transforms
        that only touch the kept modes: the FFT along H runs on m columns instead of W/2+1.
        """
        n, _, h, w = x.shape
        m = self.modes
        if 2 * m > h or m > w // 2 + 1:
            raise ValueError(f"{m} modes need a grid of at least {2 * m}x{2 * m - 2}, got {h}x{w}")
        x_w = torch.fft.rfft(x, dim=-1, norm="ortho")[..., :m]  # (N, Ci, H, m)
        x_hw = torch.fft.fft(x_w, dim=-2, norm="ortho")
        blocks = torch.cat([x_hw[:, :, :m], x_hw[:, :, -m:]], dim=2)  # (N, Ci, 2m, m)
        weight = torch.view_as_complex(self.weight if weight is None else weight)
        # -> (2, m*m, N, Ci) @ (2, m*m, Ci, Co) = (2, m*m, N, Co)
        # contiguous: complex bmm on a strided operand falls back to one copy per matrix on CPU
        xb = blocks.reshape(n, -1, 2, m * m).permute(2, 3, 0, 1).contiguous()
        out = torch.matmul(xb, weight)
        out = out.permute(2, 3, 0, 1).reshape(n, -1, 2 * m, m)
        if mask is not None:
            out = out * mask
        out_h = out.new_zeros(n, out.shape[1], h, m)
        out_h[:, :, :m] = out[:, :, :m]
        out_h[:, :, -m:] = out[:, :, m:]
        out_w = torch.fft.ifft(out_h, dim=-2, norm="ortho")
        return torch.fft.irfft(out_w, n=w, dim=-1, norm="ortho")  # zero-pads modes >= m


def _pointwise_forward(conv: nn.Conv1d | nn.Conv2d, x: Tensor) -> Tensor:
    """A 1x1 convolution as an ``einsum`` over channels: on CPU faster than mkldnn's convolution
    forward+backward at FNO sizes (the ablation in ``benchmarks/training_throughput.py``; results
    in ``benchmarks/README.md``)."""
    out = torch.einsum("oi,bi...->bo...", conv.weight.flatten(1), x)
    return out + conv.bias.view(-1, *(1,) * (x.ndim - 2))


class Pointwise1d(nn.Conv1d):
    """1x1 convolution on (B, C, W); same parameters (and state dict) as ``nn.Conv1d(i, o, 1)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return _pointwise_forward(self, x)


class Pointwise2d(nn.Conv2d):
    """1x1 convolution on (B, C, H, W); same parameters as ``nn.Conv2d(i, o, 1)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return _pointwise_forward(self, x)


class FNO(nn.Module):
    """1D or 2D FNO: pointwise lifting of (input, coordinates), Fourier layers with a pointwise
    skip, projection. Shapes below are written for 2D; in 1D drop the H axis.

    With ``config.dropout > 0`` the model is a PNO-D: :meth:`sample` applies dropout to the lifted
    features, to every Fourier layer's retained modes and to the projection's hidden features.
    """

    #: spectral layer classes for dim 1 and 2 (a subclass may swap in Bayesian layers)
    spectral_layers: ClassVar[tuple[type[nn.Module], type[nn.Module]]] = (SpectralConv1d,
                                                                            SpectralConv2d)

    def __init__(self, config: FNOConfig, seed: int | None = None) -> None:
        """``seed`` makes the initial weights reproducible without touching the global RNG."""
        super().__init__()
        self.config = config
        with torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self._build(config)

    def _build(self, c: FNOConfig) -> None:
        conv = Pointwise1d if c.dim == 1 else Pointwise2d
        spectral = self.spectral_layers[c.dim - 1]
        self.lift = conv(c.in_channels + c.dim, c.width)
        self.spectral = nn.ModuleList(spectral(c.width, c.width, c.modes)
                                      for _ in range(c.n_layers))
        self.skip = nn.ModuleList(conv(c.width, c.width) for _ in range(c.n_layers))
        self.proj1 = conv(c.width, c.projection_width)
        self.proj2 = conv(c.projection_width, c.out_channels)
        for name in ("in_mean", "out_mean"):
            self.register_buffer(name, torch.zeros(()))
        for name in ("in_std", "out_std"):
            self.register_buffer(name, torch.ones(()))

    @property
    def probabilistic(self) -> bool:
        """True when :meth:`sample` draws different fields (dropout > 0)."""
        return self.config.dropout > 0.0

    def set_normalization(self, x: Tensor, y: Tensor) -> None:
        """Scalar mean/std of training inputs ``x`` (B, C_in, H, W) and targets ``y``."""
        with torch.no_grad():
            self.in_mean.fill_(x.mean())
            self.in_std.fill_(x.std().clamp_min(1e-12))
            self.out_mean.fill_(y.mean())
            self.out_std.fill_(y.std().clamp_min(1e-12))

    def _lift(self, x: Tensor) -> Tensor:
        c = self.config
        if x.ndim != 2 + c.dim or x.shape[1] != c.in_channels:
            axes = "W" if c.dim == 1 else "H, W"
            raise ValueError(f"expected input (B, {c.in_channels}, {axes}), got {tuple(x.shape)}")
        b, spatial = x.shape[0], x.shape[2:]
        axes = [torch.linspace(0, 1, n, dtype=x.dtype, device=x.device) for n in spatial]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij")).expand(b, c.dim, *spatial)
        x = (x - self.in_mean) / self.in_std
        return self.lift(torch.cat([x, grid], dim=1))

    def _body(self, v: Tensor, generator: torch.Generator | None, stochastic: bool,
              weights: Sequence[Tensor] | None = None) -> Tensor:
        """Fourier layers and projection on lifted features v (N, width, H, W); ``weights`` (one
        per Fourier layer) replace the spectral weights, e.g. posterior draws."""
        p, c = self.config.dropout, self.config
        spatial = v.shape[2:]
        ones = (1,) * c.dim
        mode_shape = (c.modes,) if c.dim == 1 else (2 * c.modes, c.modes)
        if stochastic:
            v = v * _dropout_mask(v.shape[:2] + ones, p, v, generator)
        pad = c.padding
        if pad:
            v = F.pad(v, (0, pad) * c.dim)  # non-periodic data: pad so the FFT does not wrap
        for i, (spec, skip) in enumerate(zip(self.spectral, self.skip, strict=True)):
            mask = None
            if stochastic:
                mask = _dropout_mask((v.shape[0], c.width, *mode_shape), p, v, generator)
            v = spec(v, mask, None if weights is None else weights[i]) + skip(v)
            if i < c.n_layers - 1:
                v = F.gelu(v)
        if pad:
            v = v[(..., *(slice(0, n) for n in spatial))]
        v = F.gelu(self.proj1(v))
        if stochastic:
            v = v * _dropout_mask(v.shape[:2] + ones, p, v, generator)
        return self.proj2(v) * self.out_std + self.out_mean

    def forward(self, x: Tensor) -> Tensor:
        """Deterministic prediction (dropout off): (B, C_in, H, W) -> (B, C_out, H, W)."""
        return self._body(self._lift(x), None, stochastic=False)

    def sample(self, x: Tensor, n_samples: int,
               generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n_samples`` output fields per input: (B, C_in, H, W) -> (S, B, C_out, H, W).

        The lifting is computed once and shared by all samples; each sample gets its own dropout
        masks, drawn from ``generator`` (the global torch RNG when None), sample after sample.
        Differentiable, so the energy-score loss trains through it.

        One pass of the B inputs per sample, not one pass of S * B: on CPU a training step with
        the draws folded into the batch was slower (the ablation in
        ``benchmarks/training_throughput.py``; results in ``benchmarks/README.md``), and the
        loop holds one draw's activations at a time when no gradient is kept.
        """
        if not self.probabilistic:
            raise ValueError("this FNO has dropout=0 and no predictive distribution; "
                             "use forward() for its point prediction")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        lifted = self._lift(x)
        return torch.stack([self._body(lifted, generator, stochastic=True)
                            for _ in range(n_samples)])
