"""``deeponet``: the DeepONet of Lu et al. (2021), a deterministic baseline.

The branch net reads the input field at fixed sensors (the nodes of the training grid
``config.resolution``), the trunk net reads coordinates ``p`` in ``[0, 1]^dim``, and

    u_c(p) = sum_k branch_{c,k}(a) * trunk_{c,k}(p) + bias_c

for every output channel ``c`` with ``config.deeponet_basis`` basis functions each. Inputs on
another grid are interpolated (linear, ``align_corners=True``: the grid spans [0, 1] node to node)
to the sensors, while the trunk evaluates at the nodes of the input's own grid, so the operator
evaluates at any resolution. Shapes are channel-first, ``(B, C, W)`` or ``(B, C, H, W)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.methods import MethodConfig, Surrogate
from model.metrics import relative_l2


def mlp(n_in: int, width: int, n_out: int, n_layers: int, last_activation: bool) -> nn.Sequential:
    """``n_layers`` linear layers (``n_in -> width -> ... -> n_out``) with GELU between them, and
    after the last one when ``last_activation``."""
    sizes = [n_in] + [width] * (n_layers - 1) + [n_out]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < n_layers - 1 or last_activation:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def grid_points(spatial: tuple[int, ...], like: Tensor) -> Tensor:
    """Nodes of a uniform grid on ``[0, 1]^dim`` in C order: (prod(spatial), dim)."""
    axes = [torch.linspace(0, 1, n, dtype=like.dtype, device=like.device) for n in spatial]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(spatial))


class DeepONet(Surrogate):
    """Unstacked DeepONet with ``deeponet_layers`` linear layers of width ``deeponet_width`` in
    each net (GELU; the trunk's last layer is activated too, as in Lu et al.)."""

    method = "deeponet"

    def __init__(self, config: MethodConfig, seed: int | None = None) -> None:
        super().__init__(config)
        bb, res = config.backbone, config.resolution
        if not res:
            raise ValueError("deeponet needs config.resolution, the training grid its branch net "
                             "reads (e.g. (64, 64)); got ()")
        if len(res) != bb.dim or min(res) < 2:
            raise ValueError(f"resolution must be {bb.dim} sizes >= 2 for dim={bb.dim}, got {res}")
        n_basis = config.deeponet_basis * bb.out_channels
        width, depth = config.deeponet_width, config.deeponet_layers
        with torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.branch = mlp(bb.in_channels * math.prod(res), width, n_basis, depth, False)
            self.trunk = mlp(bb.dim, width, n_basis, depth, True)
        self.bias = nn.Parameter(torch.zeros(bb.out_channels))
        for name in ("in_mean", "out_mean"):
            self.register_buffer(name, torch.zeros(()))
        for name in ("in_std", "out_std"):
            self.register_buffer(name, torch.ones(()))

    def set_normalization(self, x: Tensor, y: Tensor) -> None:
        """Scalar mean/std of training inputs ``x`` (B, C_in, *spatial) and targets ``y``."""
        with torch.no_grad():
            self.in_mean.fill_(x.mean())
            self.in_std.fill_(x.std().clamp_min(1e-12))
            self.out_mean.fill_(y.mean())
            self.out_std.fill_(y.std().clamp_min(1e-12))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, *spatial) -> (B, C_out, *spatial), on the input's grid."""
        bb, res = self.config.backbone, self.config.resolution
        if x.ndim != 2 + bb.dim or x.shape[1] != bb.in_channels:
            axes = "W" if bb.dim == 1 else "H, W"
            raise ValueError(f"expected input (B, {bb.in_channels}, {axes}), got {tuple(x.shape)}")
        spatial = tuple(x.shape[2:])
        if min(spatial) < 2:
            raise ValueError(f"need at least 2 points per axis, got grid {spatial}")
        a = (x - self.in_mean) / self.in_std
        if spatial != res:
            a = F.interpolate(a, size=res, mode="linear" if bb.dim == 1 else "bilinear",
                              align_corners=True)
        c = bb.out_channels
        coef = self.branch(a.flatten(1)).view(x.shape[0], c, -1)  # (B, C_out, K)
        basis = self.trunk(grid_points(spatial, x)).view(-1, c, coef.shape[-1])  # (P, C_out, K)
        out = torch.einsum("bck,pck->bcp", coef, basis) + self.bias.view(1, c, 1)
        return out.view(x.shape[0], c, *spatial) * self.out_std + self.out_mean

    def training_loss(self, x: Tensor, y: Tensor, *, n_train: int,
                      generator: torch.Generator | None = None) -> Tensor:
        return relative_l2(self(x), y).mean()
