"""Rollouts against a linear stochastic model whose multi-step distribution is known exactly."""

from __future__ import annotations

import math

import pytest
import torch
from test_methods import make_data, make_model
from torch import Tensor, nn

from model.rollout import relative_spread, rollout_paths, score_rollout


class MultiplicativeNoise(nn.Module):
    """u -> a u (1 + sigma eps): after k steps from u0, E = a^k u0 and
    E[u^2] = (a^2 (1 + sigma^2))^k u0^2, provided every path is fed its own state."""

    probabilistic = True

    def __init__(self, a: float, sigma: float) -> None:
        super().__init__()
        self.a, self.sigma = a, sigma

    def forward(self, x: Tensor) -> Tensor:
        return self.a * x

    def sample(self, x: Tensor, n_samples: int, generator: torch.Generator | None = None):
        eps = torch.randn((n_samples, *x.shape), generator=generator, dtype=x.dtype)
        return self.a * x * (1 + self.sigma * eps)


class Linear(MultiplicativeNoise):
    probabilistic = False


def test_paths_compound_their_own_noise_like_the_exact_distribution():
    a, sigma, k, s = 0.9, 0.2, 4, 20000
    model = MultiplicativeNoise(a, sigma)
    x0 = torch.full((2, 1, 3), 2.0, dtype=torch.float64)
    paths = rollout_paths(model, x0, k, s, torch.Generator().manual_seed(0))
    assert paths.shape == (k, s, 2, 1, 3)
    for step in range(1, k + 1):
        p = paths[step - 1]
        mean = a**step * 2.0
        var = (a**2 * (1 + sigma**2)) ** step * 4.0 - mean**2
        assert float(p.mean()) == pytest.approx(mean, rel=0.01)
        assert float(p.var()) == pytest.approx(var, rel=0.03)


def test_relative_spread_and_first_crossing_step():
    a, sigma, k = 1.0, 0.06, 6
    model = MultiplicativeNoise(a, sigma)
    x0 = torch.full((3, 1, 4), 1.0, dtype=torch.float64)
    truth = x0.unsqueeze(1).expand(3, k, 1, 4).clone()
    res = score_rollout(model, x0, truth, n_paths=4000, spread_threshold=0.1, batch_size=2)
    exact = [math.sqrt((1 + sigma**2) ** j - 1) for j in range(1, k + 1)]  # std / mean
    got = [st["relative_spread"] for st in res["steps"]]
    assert got == pytest.approx(exact, rel=0.05)
    assert res["first_step_over_threshold"] == next(j + 1 for j, e in enumerate(exact) if e > 0.1)
    # the truth (constant) is inside the 90% band early on: coverage well above 0
    assert res["steps"][0]["coverage_90"] > 0.5


def test_deterministic_rollout_is_the_iterated_map_without_spread():
    model = Linear(0.5, 0.0)
    x0 = torch.ones(2, 1, 4, dtype=torch.float64)
    truth = torch.stack([0.5**j * x0 for j in range(1, 4)], dim=1)
    res = score_rollout(model, x0, truth, n_paths=10)
    assert res["n_paths"] == 1 and res["first_step_over_threshold"] is None
    assert all(st["rel_l2"] == 0.0 and st["relative_spread"] is None for st in res["steps"])
    assert "coverage_90" not in res["steps"][0]


@pytest.mark.parametrize("method", ["pno-dropout", "ensemble", "fno"])
def test_real_methods_roll_out_with_the_right_shapes(method: str):
    model = make_model(method, dim=1)
    x, _ = make_data(1, b=3)
    paths = rollout_paths(model, x, 2, 5, torch.Generator().manual_seed(0))
    assert paths.shape == ((2, 5) if model.probabilistic else (2, 1)) + tuple(x.shape)
    assert torch.isfinite(paths).all()
    if model.probabilistic:
        assert float(relative_spread(paths[1]).min()) > 0


def test_truth_shape_is_checked():
    with pytest.raises(ValueError, match="truth must be"):
        score_rollout(Linear(1.0, 0.0), torch.ones(2, 1, 4), torch.ones(2, 1, 4), n_paths=2)
