"""Tests for model.intervals against independent references (scoringrules, scipy, numpy) and
hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import scoringrules as sr
import torch
from scipy import stats

from model.intervals import (
    LEVELS,
    QUANTILE_LEVELS,
    calibration_error,
    central_intervals,
    coverage_and_width,
    coverage_and_width_at_levels,
    interval,
    interval_score,
    pit,
    pit_histogram,
    quantile_calibration,
    sharpness,
)

RTOL = 1e-6
SHAPES = [(4, 7), (3, 2, 5, 6)]  # (B, *field)


def _ensemble(s: int, shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 samples (S, B, *field) with an offset and scale, and a target (B, *field)."""
    gen = torch.Generator().manual_seed(seed)
    samples = 1.5 * torch.randn(s, *shape, generator=gen, dtype=torch.float64) + 0.3
    target = torch.randn(*shape, generator=gen, dtype=torch.float64)
    return samples, target


# ------------------------------------------------------------------------------------------
# central intervals and the interval score
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [2, 5, 20, 101])
@pytest.mark.parametrize("shape", SHAPES)
def test_central_intervals_match_numpy_quantile(s: int, shape: tuple[int, ...]) -> None:
    samples, target = _ensemble(s, shape)
    lower, upper = central_intervals(samples, LEVELS)
    assert lower.shape == upper.shape == (len(LEVELS), *shape)
    x, t = samples.numpy(), target.numpy()
    b = shape[0]
    for i, level in enumerate(LEVELS):
        lo, hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2], axis=0, method="linear")
        np.testing.assert_allclose(lower[i].numpy(), lo, rtol=RTOL, atol=1e-12)
        np.testing.assert_allclose(upper[i].numpy(), hi, rtol=RTOL, atol=1e-12)
        cov, width = coverage_and_width_at_levels(samples, target, LEVELS)
        expected_cov = ((lo <= t) & (t <= hi)).reshape(b, -1).mean(axis=1)
        np.testing.assert_allclose(cov[i].numpy(), expected_cov, rtol=RTOL)
        np.testing.assert_allclose(width[i].numpy(), (hi - lo).reshape(b, -1).mean(1), rtol=RTOL)


def test_multi_level_rows_equal_single_level_functions() -> None:
    samples, target = _ensemble(9, (3, 4, 4))
    levels = (0.3, 0.9, 0.6)  # any order, not only the defaults
    lower, upper = central_intervals(samples, levels)
    cov, width = coverage_and_width_at_levels(samples, target, levels)
    assert cov.shape == width.shape == (3, 3)
    for i, level in enumerate(levels):
        lo, hi = interval(samples, level)
        assert torch.equal(lower[i], lo) and torch.equal(upper[i], hi)
        c, w = coverage_and_width(samples, target, level)
        assert torch.equal(cov[i], c) and torch.equal(width[i], w)


@pytest.mark.parametrize("level", [0.5, 0.8, 0.95, 0.99])
@pytest.mark.parametrize("shape", SHAPES)
def test_interval_score_matches_scoringrules(level: float, shape: tuple[int, ...]) -> None:
    samples, target = _ensemble(6, shape, seed=3)
    lower, upper = interval(samples, level)
    got = interval_score(lower, upper, target, level)
    assert got.shape == target.shape
    # scoringrules' alpha is the miss rate of the 1 - alpha interval
    expected = sr.interval_score(target.numpy(), lower.numpy(), upper.numpy(), alpha=1 - level)
    np.testing.assert_allclose(got.numpy(), expected, rtol=RTOL, atol=1e-12)
    # the three cases are all present, so the test exercises both penalties
    t, lo, hi = target.numpy(), lower.numpy(), upper.numpy()
    assert (t < lo).any() and (t > hi).any() and ((lo <= t) & (t <= hi)).any()


def test_interval_score_hand_values() -> None:
    lower, upper = torch.zeros(1, 3), torch.ones(1, 3)
    target = torch.tensor([[0.5, -0.2, 1.5]])
    # alpha = 0.2: width 1, plus 2 / 0.2 = 10 times the miss distance
    expected = torch.tensor([[1.0, 1.0 + 10 * 0.2, 1.0 + 10 * 0.5]])
    torch.testing.assert_close(interval_score(lower, upper, target, 0.8), expected)


# ------------------------------------------------------------------------------------------
# PIT
# ------------------------------------------------------------------------------------------


def test_pit_hand_example() -> None:
    samples = torch.tensor(
        [[[0.0, 1.0, 0.0]], [[3.0, 1.0, 0.0]], [[1.0, 2.0, 0.0]], [[2.0, 1.0, 0.0]]],
        dtype=torch.float64,
    )  # (S=4, B=1, 3): point 0 {0, 3, 1, 2}, point 1 {1, 1, 2, 1}, point 2 all 0
    target = torch.tensor([[1.5, 1.0, 5.0]], dtype=torch.float64)
    u = torch.rand(1, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    # (#below + U (#ties + 1)) / (S + 1): 2 below; 0 below and 3 ties; 4 below
    expected = torch.stack([(2 + u[0, 0]) / 5, 4 * u[0, 1] / 5, (4 + u[0, 2]) / 5]).unsqueeze(0)
    got = pit(samples, target, generator=torch.Generator().manual_seed(7))
    assert got.shape == target.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-15, atol=0)


def test_pit_is_uniform_for_an_exchangeable_ensemble() -> None:
    gen = torch.Generator().manual_seed(1)
    samples = torch.randn(9, 8, 500, generator=gen, dtype=torch.float64)
    target = torch.randn(8, 500, generator=gen, dtype=torch.float64)
    values = pit(samples, target, generator=gen).flatten().numpy()
    assert stats.kstest(values, "uniform").pvalue > 0.01
    # a 2x too narrow ensemble is detected (U-shaped PIT)
    narrow = pit(0.5 * samples, target, generator=gen).flatten().numpy()
    assert stats.kstest(narrow, "uniform").pvalue < 1e-6


def test_pit_randomisation_handles_ties_of_a_discrete_ensemble() -> None:
    gen = torch.Generator().manual_seed(2)
    rates = torch.full((4, 1000), 2.0, dtype=torch.float64)
    samples = torch.poisson(rates.expand(5, 4, 1000), generator=gen)
    target = torch.poisson(rates, generator=gen)
    assert (samples == target).any()  # ties are frequent
    values = pit(samples, target, generator=gen).flatten().numpy()
    assert stats.kstest(values, "uniform").pvalue > 0.01
    # without the randomisation (ties broken at their mid-rank) the PIT is far from uniform
    below, ties = (samples < target).sum(0), (samples == target).sum(0)
    mid_rank = ((below + 0.5 * (ties + 1)) / 6).flatten().numpy()
    assert stats.kstest(mid_rank, "uniform").pvalue < 1e-6


@pytest.mark.parametrize("bins", [1, 7, 20])
def test_pit_histogram_matches_numpy(bins: int) -> None:
    values = torch.rand(3, 333, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    values[0, :3] = torch.tensor([0.0, 1.0, 0.5])  # both ends of the range land in a bin
    counts = pit_histogram(values, bins)
    expected, _ = np.histogram(values.numpy(), bins=bins, range=(0.0, 1.0))
    assert counts.dtype == torch.int64
    np.testing.assert_array_equal(counts.numpy(), expected)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pit_histogram(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="bins"):
        pit_histogram(values, 0)


# ------------------------------------------------------------------------------------------
# quantile calibration, ECE, sharpness
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [3, 20, 64])
@pytest.mark.parametrize("shape", SHAPES)
def test_quantile_calibration_matches_numpy(s: int, shape: tuple[int, ...]) -> None:
    samples, target = _ensemble(s, shape, seed=5)
    got = quantile_calibration(samples, target)
    assert got.shape == (len(QUANTILE_LEVELS), shape[0])
    q = np.quantile(samples.numpy(), QUANTILE_LEVELS, axis=0, method="linear")  # (T, B, ...)
    expected = (target.numpy() <= q).reshape(len(QUANTILE_LEVELS), shape[0], -1).mean(axis=2)
    np.testing.assert_allclose(got.numpy(), expected, rtol=RTOL)
    ece = calibration_error(got.mean(dim=1))
    expected_ece = np.mean(np.abs(np.array(QUANTILE_LEVELS) - expected.mean(axis=1)))
    assert float(ece) == pytest.approx(expected_ece, rel=RTOL)


def test_quantile_calibration_and_ece_hand_computation() -> None:
    # both fields hold the sample set {0, 1, 2, 3, 4} at every point (in shuffled order), so
    # the linear quantiles at tau = 0.1, 0.5, 0.9 are 0.4, 2.0 and 3.6
    base = torch.tensor([3.0, 0.0, 4.0, 1.0, 2.0], dtype=torch.float64)
    samples = base.reshape(5, 1, 1).expand(5, 2, 4).clone()
    samples[:, 1] = samples[:, 1].flip(0)
    target = torch.tensor([[-1.0, 0.3, 2.5, 3.7], [5.0, 5.0, 1.0, 0.0]], dtype=torch.float64)
    taus = (0.1, 0.5, 0.9)
    shares = quantile_calibration(samples, target, taus)
    expected = torch.tensor([[0.5, 0.25], [0.5, 0.5], [0.75, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(shares, expected)
    # per field: (|0.1 - 0.5| + 0 + |0.9 - 0.75|) / 3 and (0.15 + 0 + 0.4) / 3
    torch.testing.assert_close(
        calibration_error(shares, taus), torch.tensor([0.55 / 3, 0.55 / 3], dtype=torch.float64)
    )
    # pooled: shares 0.375, 0.5, 0.625
    pooled = calibration_error(shares.mean(dim=1), taus)
    assert float(pooled) == pytest.approx((0.275 + 0.0 + 0.275) / 3, rel=1e-12)
    with pytest.raises(ValueError, match="quantile levels"):
        calibration_error(shares, QUANTILE_LEVELS)


def test_ece_separates_calibrated_from_too_narrow_gaussian_ensemble() -> None:
    gen = torch.Generator().manual_seed(6)
    samples = torch.randn(400, 4, 2500, generator=gen, dtype=torch.float64)
    target = torch.randn(4, 2500, generator=gen, dtype=torch.float64)
    good = float(calibration_error(quantile_calibration(samples, target).mean(dim=1)))
    narrow = float(calibration_error(quantile_calibration(0.5 * samples, target).mean(dim=1)))
    # the too-narrow ensemble's population curve: P(Y <= q_tau) = Phi(Phi^-1(tau) / 2)
    taus = np.array(QUANTILE_LEVELS)
    narrow_expected = np.mean(np.abs(taus - stats.norm.cdf(0.5 * stats.norm.ppf(taus))))
    assert good < 0.01
    assert narrow == pytest.approx(narrow_expected, abs=0.01)
    assert narrow > 10 * good


@pytest.mark.parametrize("s", [2, 7, 30])
@pytest.mark.parametrize("shape", SHAPES)
def test_sharpness_matches_numpy(s: int, shape: tuple[int, ...]) -> None:
    samples, _ = _ensemble(s, shape, seed=8)
    expected = samples.numpy().std(axis=0, ddof=1).reshape(shape[0], -1).mean(axis=1)
    got = sharpness(samples)
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got.numpy(), expected, rtol=RTOL)
    with pytest.raises(ValueError, match="at least 2"):
        sharpness(samples[:1])


# ------------------------------------------------------------------------------------------
# dtypes and input checks
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_functions_keep_dtype(dtype: torch.dtype) -> None:
    samples, target = _ensemble(5, (2, 3, 4))
    samples, target = samples.to(dtype), target.to(dtype)
    lower, upper = interval(samples)
    outputs = [
        *central_intervals(samples),
        *coverage_and_width_at_levels(samples, target),
        interval_score(lower, upper, target, 0.9),
        pit(samples, target, generator=torch.Generator().manual_seed(0)),
        quantile_calibration(samples, target),
        calibration_error(quantile_calibration(samples, target)),
        sharpness(samples),
    ]
    assert all(out.dtype == dtype for out in outputs)


def test_bad_inputs_raise_value_error() -> None:
    samples, target = _ensemble(4, (3, 5))
    bad = target[:2]
    pattern = r"\(4, 3, 5\)|\(3, 5\)"
    for call in (
        lambda: coverage_and_width_at_levels(samples, bad),
        lambda: interval_score(target, target, bad, 0.9),
        lambda: pit(samples, bad),
        lambda: quantile_calibration(samples, bad),
    ):
        with pytest.raises(ValueError, match=pattern):
            call()
    for call in (
        lambda: central_intervals(samples, (0.5, 1.0)),
        lambda: central_intervals(samples, ()),
        lambda: interval_score(target, target, target, 0.0),
        lambda: quantile_calibration(samples, target, (0.0, 0.5)),
    ):
        with pytest.raises(ValueError, match="levels|level"):
            call()
