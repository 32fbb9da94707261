"""Split conformal calibration against hand computations and its finite-sample guarantee on
synthetic Gaussian predictions whose spread is wrong by a known factor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from model.conformal import (
    calibrate,
    calibrated_coverage_curve,
    conformal_quantile,
    function_scores,
    normalized_scores,
    raw_coverage,
)


def test_conformal_quantile_is_the_ceil_n_plus_1_order_statistic():
    scores = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0])  # sorted: 1 2 3 4 5
    assert conformal_quantile(scores, 0.5) == 3.0  # ceil(6 * 0.5) = 3rd
    assert conformal_quantile(scores, 0.6) == 4.0  # ceil(3.6) = 4th
    assert conformal_quantile(scores, 0.8) == 5.0  # ceil(4.8) = 5th
    assert conformal_quantile(scores, 0.9) == math.inf  # ceil(5.4) = 6 > n
    with pytest.raises(ValueError, match="level"):
        conformal_quantile(scores, 1.0)


def test_scores_by_hand_and_zero_spread():
    mean = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    scale = torch.tensor([[1.0, 2.0, 0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, 2.0, 4.0]])
    s = normalized_scores(mean, scale, target)
    assert s.tolist() == [[1.0, 0.5, 0.0, math.inf]]
    # 3 of 4 points needed: the 3rd smallest of (0, 0.5, 1, inf)
    assert function_scores(s, 0.75).tolist() == [1.0]
    assert function_scores(s, 0.5).tolist() == [0.5]
    with pytest.raises(ValueError, match="one shape"):
        normalized_scores(mean, scale[:, :2], target)


def _gaussian_split(gen: torch.Generator, n: int, j: int, true_std: float,
                    claimed_std: float) -> tuple[torch.Tensor, ...]:
    """Fields of ``j`` independent points with truth ~ N(mean, true_std^2) and a model that
    claims ``claimed_std`` (a known mis-scaling); the mean varies across points and functions."""
    mean = torch.randn(n, j, generator=gen, dtype=torch.float64)
    spread = 0.5 + torch.rand(n, j, generator=gen, dtype=torch.float64)  # heteroscedastic
    target = mean + true_std * spread * torch.randn(n, j, generator=gen, dtype=torch.float64)
    return mean, claimed_std * spread, target


@pytest.mark.parametrize("claimed", [0.5, 2.0])
def test_calibration_corrects_a_known_misscaling_within_the_finite_sample_bound(claimed: float):
    """A model whose std is off by a factor 2 (either way) covers far from 90% before; after
    split conformal calibration on n functions, the average test coverage over many repetitions
    lies in [level, level + 1/(n+1)] (per function) and [level, level + 1/(nJ+1)] (per point),
    up to Monte Carlo error; the fitted scale recovers z_0.95 / claimed."""
    gen = torch.Generator().manual_seed(0)
    level, rate, n, j, trials = 0.9, 0.9, 40, 50, 300
    z = stats.norm.ppf(0.5 + level / 2)
    point_cov, func_cov, before, scales = [], [], [], []
    for _ in range(trials):
        cal = calibrate(*_gaussian_split(gen, n, j, 1.0, claimed), level=level, point_rate=rate)
        test = _gaussian_split(gen, 200, j, 1.0, claimed)
        after = cal.evaluate(*test)
        point_cov.append(after["point_coverage"])
        func_cov.append(after["function_coverage"])
        before.append(raw_coverage(*test, z=z, point_rate=rate)["point_coverage"])
        scales.append(cal.point_scale)
    true_before = 2 * stats.norm.cdf(z * claimed) - 1
    assert abs(np.mean(before) - true_before) < 0.005
    assert abs(np.mean(before) - level) > 0.09  # badly calibrated before
    se_f = np.std(func_cov) / math.sqrt(trials)
    assert level - 3 * se_f <= np.mean(func_cov) <= level + 1 / (n + 1) + 3 * se_f
    se_p = np.std(point_cov) / math.sqrt(trials)
    assert level - 3 * se_p <= np.mean(point_cov) <= level + 1 / (n * j + 1) + 3 * se_p
    assert abs(np.mean(scales) - z / claimed) < 0.02 * z / claimed


def test_function_guarantee_counts_whole_functions():
    """With one bad point in every function and point_rate 1, every function needs the bad
    point covered: the function scale is that point's score, the point scale is not."""
    n, j = 30, 20
    mean = torch.zeros(n, j, dtype=torch.float64)
    scale = torch.ones(n, j, dtype=torch.float64)
    target = torch.full((n, j), 0.1, dtype=torch.float64)
    target[:, 0] = 5.0 + torch.arange(n, dtype=torch.float64) / n
    cal = calibrate(mean, scale, target, level=0.9, point_rate=1.0)
    assert cal.point_scale == pytest.approx(0.1)
    k = math.ceil((n + 1) * 0.9)
    assert cal.function_scale == pytest.approx(5.0 + (k - 1) / n)
    res = cal.evaluate(mean, scale, target)
    assert res["function_coverage"] == pytest.approx(k / n)
    assert res["point_coverage"] == pytest.approx(1 - 1 / j)


def test_calibrated_curve_is_near_nominal_at_every_level():
    gen = torch.Generator().manual_seed(1)
    levels = (0.5, 0.8, 0.9, 0.95, 0.99)
    cal = normalized_scores(*_gaussian_split(gen, 100, 100, 1.0, 0.3))
    test = normalized_scores(*_gaussian_split(gen, 100, 100, 1.0, 0.3))
    curve = calibrated_coverage_curve(cal, test, levels)
    assert np.allclose(curve, levels, atol=0.01)


def test_deterministic_band_from_residuals():
    """scale = 1 gives the plain absolute-residual conformal band of a point prediction."""
    gen = torch.Generator().manual_seed(2)
    mean = torch.randn(50, 64, generator=gen, dtype=torch.float64)
    target = mean + 0.2 * torch.randn(50, 64, generator=gen, dtype=torch.float64)
    ones = torch.ones_like(mean)
    cal = calibrate(mean, ones, target, level=0.9)
    assert cal.point_scale == pytest.approx(float(np.quantile(
        (target - mean).abs().numpy(), math.ceil((50 * 64 + 1) * 0.9 - 1e-9) / (50 * 64),
        method="inverted_cdf")))
    lower, upper = cal.interval(mean, ones)
    assert torch.allclose(upper - lower, torch.full_like(mean, 2 * cal.point_scale))
