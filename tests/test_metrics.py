"""Tests for model.metrics against independent references (scoringrules, scipy, numpy).

scoringrules runs on its numpy backend here (numba is not installed); its "nrg"/"fair"
estimators materialise all ensemble pairs, so they are an independent check of the sorting
(CRPS) and Gram/pair (energy score) forms used in model.metrics.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scoringrules as sr
import torch
from scipy import stats

from model import metrics
from model.intervals import (
    calibration_error,
    interval_score,
    pit,
    pit_histogram,
    quantile_calibration,
    sharpness,
)
from model.metrics import (
    ScoreAccumulator,
    coverage_and_width,
    crps_ensemble,
    crps_gaussian,
    energy_score,
    gaussian_nll,
    interval,
    relative_l2,
    rmse,
    sample_stats,
)

RTOL = 1e-6


def _rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=dtype)


def _ensemble(s: int = 7, b: int = 4, field: tuple[int, ...] = (2, 5, 6), seed: int = 0):
    """Samples (S, B, *field) and a target (B, *field) with a non-trivial offset and scale."""
    samples = 1.5 * _rand(s, b, *field, seed=seed) + 0.3
    target = _rand(b, *field, seed=seed + 1)
    return samples, target


# ------------------------------------------------------------------------------------------
# deterministic errors
# ------------------------------------------------------------------------------------------


def test_relative_l2_and_rmse_match_numpy() -> None:
    pred, target = _rand(5, 3, 8, 8, seed=1), _rand(5, 3, 8, 8, seed=2)
    p, t = pred.numpy().reshape(5, -1), target.numpy().reshape(5, -1)
    expected_rel = np.linalg.norm(p - t, axis=1) / np.linalg.norm(t, axis=1)
    expected_rmse = np.sqrt(np.mean((p - t) ** 2, axis=1))
    np.testing.assert_allclose(relative_l2(pred, target).numpy(), expected_rel, rtol=RTOL)
    np.testing.assert_allclose(rmse(pred, target).numpy(), expected_rmse, rtol=RTOL)
    assert relative_l2(pred, target).shape == (5,)


def test_relative_l2_backprop() -> None:
    pred = _rand(3, 4, 4, seed=3).requires_grad_()
    target = _rand(3, 4, 4, seed=4)
    relative_l2(pred, target).sum().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    # a perfect prediction is a kink of the norm: the gradient must be 0, not NaN
    exact = target.clone().requires_grad_()
    relative_l2(exact, target).sum().backward()
    assert torch.equal(exact.grad, torch.zeros_like(exact))


# ------------------------------------------------------------------------------------------
# CRPS
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [2, 3, 10, 33])
@pytest.mark.parametrize("field", [(7,), (2, 5, 6)])
@pytest.mark.parametrize("fair", [False, True])
def test_crps_matches_scoringrules(s: int, field: tuple[int, ...], fair: bool) -> None:
    samples, target = _ensemble(s=s, field=field)
    estimator = "fair" if fair else "nrg"
    expected = sr.crps_ensemble(target.numpy(), samples.numpy(), m_axis=0, estimator=estimator)
    got = crps_ensemble(samples, target, fair=fair)
    assert got.shape == target.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("s", [2, 5])
def test_crps_fair_matches_pair_definition(s: int) -> None:
    """Literal double sum with the 1 / (2 S (S - 1)) pair constant, independent of scoringrules."""
    samples, target = _ensemble(s=s, b=2, field=(3,))
    x, y = samples.numpy(), target.numpy()
    pair = np.abs(x[:, None] - x[None, :]).sum(axis=(0, 1))
    expected = np.abs(x - y).mean(axis=0) - pair / (2 * s * (s - 1))
    np.testing.assert_allclose(crps_ensemble(samples, target, fair=True).numpy(), expected,
                               rtol=RTOL)


def test_crps_single_sample_is_absolute_error() -> None:
    samples, target = _ensemble(s=1)
    np.testing.assert_allclose(
        crps_ensemble(samples, target).numpy(), (samples[0] - target).abs().numpy(), rtol=RTOL
    )
    with pytest.raises(ValueError, match=r"at least 2.*\(1, 4, 2, 5, 6\)"):
        crps_ensemble(samples, target, fair=True)


def test_crps_large_offset_is_stable_in_float32() -> None:
    # fields with a large common offset: the sorted weighted sum must not cancel catastrophically
    samples, target = _ensemble(s=16)
    ref = crps_ensemble(samples, target)
    shifted = crps_ensemble((samples + 1e3).float(), (target + 1e3).float())
    torch.testing.assert_close(shifted.double(), ref, rtol=0, atol=2e-4)


@pytest.mark.parametrize("fair", [False, True])
def test_crps_ensemble_approaches_crps_gaussian(fair: bool) -> None:
    rng = np.random.default_rng(11)
    mu, sigma = 0.7, 1.3
    target = torch.tensor([[-2.0, 0.0, 0.7, 1.5, 4.0], [0.2, -0.5, 2.5, 1.0, -1.0]])
    target = target.double()
    draws = torch.from_numpy(rng.normal(mu, sigma, size=(200_000, *target.shape)))
    got = crps_ensemble(draws, target, fair=fair).numpy()
    closed = crps_gaussian(torch.full_like(target, mu), torch.full_like(target, sigma), target)
    np.testing.assert_allclose(got, closed.numpy(), rtol=0.02)
    np.testing.assert_allclose(got, sr.crps_normal(target.numpy(), mu, sigma), rtol=0.02)


@pytest.mark.parametrize("shape", [(6,), (4, 3, 5), (2, 2, 3, 4)])
def test_crps_gaussian_matches_scoringrules(shape: tuple[int, ...]) -> None:
    mean, target = 2.0 * _rand(*shape, seed=12), 3.0 * _rand(*shape, seed=13)
    std = _rand(*shape, seed=14).abs() + 0.05
    got = crps_gaussian(mean, std, target)
    assert got.shape == target.shape
    expected = sr.crps_normal(target.numpy(), mean.numpy(), std.numpy())
    np.testing.assert_allclose(got.numpy(), expected, rtol=RTOL)


def test_crps_gaussian_zero_spread_and_gradients() -> None:
    mean = _rand(3, 4, seed=15).requires_grad_()
    std = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    target = _rand(3, 4, seed=16)
    score = crps_gaussian(mean, std, target)
    torch.testing.assert_close(score, (target - mean).abs())  # the point-forecast limit
    score.sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(std.grad).all()
    with pytest.raises(ValueError, match="std"):
        crps_gaussian(mean, -torch.ones(3, 4), target)


# ------------------------------------------------------------------------------------------
# energy score
# ------------------------------------------------------------------------------------------


def _es_reference(samples: torch.Tensor, target: torch.Tensor, estimator: str) -> np.ndarray:
    s, b = samples.shape[:2]
    fct = samples.numpy().reshape(s, b, -1)  # (S, B, d)
    obs = target.numpy().reshape(b, -1)  # (B, d)
    d = obs.shape[1]
    return sr.es_ensemble(obs, fct, m_axis=0, v_axis=-1, estimator=estimator) / math.sqrt(d)


def _es_double_loop(samples: torch.Tensor, target: torch.Tensor, fair: bool) -> np.ndarray:
    """Literal definition, for the fair constant checked independently of scoringrules."""
    s, b = samples.shape[:2]
    x = samples.numpy().reshape(s, b, -1)
    y = target.numpy().reshape(b, -1)
    d = y.shape[1]
    out = np.zeros(b)
    for bi in range(b):
        first = np.mean([np.linalg.norm(x[j, bi] - y[bi]) for j in range(s)])
        pair = sum(np.linalg.norm(x[j, bi] - x[k, bi]) for j in range(s) for k in range(s))
        c = 1.0 / (2 * s * (s - 1)) if fair else 1.0 / (2 * s * s)
        out[bi] = (first - c * pair) / math.sqrt(d)
    return out


@pytest.fixture(params=["direct", "gram"])
def es_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run energy-score tests through both the exact-pairs and the Gram-matrix code paths."""
    if request.param == "gram":
        monkeypatch.setattr(metrics, "_PAIRWISE_DIRECT_MAX_ELEMENTS", 0)
    return request.param


@pytest.mark.parametrize("s", [2, 3, 9])
@pytest.mark.parametrize("fair", [False, True])
def test_energy_score_matches_scoringrules(s: int, fair: bool, es_path: str) -> None:
    samples, target = _ensemble(s=s)
    got = energy_score(samples, target, fair=fair)
    assert got.shape == (target.shape[0],)
    expected = _es_reference(samples, target, "fair" if fair else "nrg")
    np.testing.assert_allclose(got.numpy(), expected, rtol=RTOL)
    np.testing.assert_allclose(got.numpy(), _es_double_loop(samples, target, fair), rtol=RTOL)


def test_energy_score_single_sample_is_rms_distance() -> None:
    samples, target = _ensemble(s=1)
    np.testing.assert_allclose(
        energy_score(samples, target).numpy(), rmse(samples[0], target).numpy(), rtol=RTOL
    )
    with pytest.raises(ValueError, match="at least 2"):
        energy_score(samples, target, fair=True)


def test_energy_score_gram_path_float32_with_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    samples, target = _ensemble(s=12)
    exact = energy_score(samples, target)
    monkeypatch.setattr(metrics, "_PAIRWISE_DIRECT_MAX_ELEMENTS", 0)
    gram = energy_score((samples + 100.0).float(), (target + 100.0).float())
    assert gram.dtype == torch.float32
    torch.testing.assert_close(gram.double(), exact, rtol=0, atol=1e-4)


def test_energy_score_backprop_and_finite_gradient_for_coinciding_samples(es_path: str) -> None:
    base, target = _ensemble(s=3, b=2)
    base.requires_grad_()
    # sample 1 duplicates sample 0 exactly (as dropout can), sample 2 equals the target
    samples = torch.stack([base[0], base[0], target.clone()])
    loss = energy_score(samples, target, fair=True).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert base.grad is not None and torch.isfinite(base.grad).all()
    assert base.grad[0].abs().sum() > 0  # the duplicated sample still gets a training signal

    # all samples identical and equal to the target: score 0, gradient finite
    same = target.clone().requires_grad_()
    stacked = same.unsqueeze(0).expand(3, *same.shape)
    energy_score(stacked, target, fair=True).sum().backward()
    assert torch.isfinite(same.grad).all()


# ------------------------------------------------------------------------------------------
# Gaussian NLL
# ------------------------------------------------------------------------------------------


def test_gaussian_nll_matches_scipy() -> None:
    mean, target = _rand(4, 3, 7, seed=5), _rand(4, 3, 7, seed=6)
    std = _rand(4, 3, 7, seed=7).abs() + 0.1
    expected = -stats.norm.logpdf(target.numpy(), loc=mean.numpy(), scale=std.numpy())
    got = gaussian_nll(mean, std, target)
    assert got.shape == target.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=RTOL)


def test_gaussian_nll_floors_std() -> None:
    mean, target = torch.zeros(2, 3), torch.full((2, 3), 1e-3)
    got = gaussian_nll(mean, torch.zeros(2, 3), target, min_std=1e-2)
    expected = -stats.norm.logpdf(1e-3, loc=0.0, scale=1e-2)
    np.testing.assert_allclose(got.numpy(), np.full((2, 3), expected), rtol=1e-5)


# ------------------------------------------------------------------------------------------
# intervals, coverage, sample statistics
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [2, 5, 20, 101])
@pytest.mark.parametrize("level", [0.5, 0.9, 0.95])
def test_interval_matches_numpy_quantile(s: int, level: float) -> None:
    samples, _ = _ensemble(s=s)
    lower, upper = interval(samples, level)
    q = np.quantile(samples.numpy(), [(1 - level) / 2, (1 + level) / 2], axis=0)
    np.testing.assert_allclose(lower.numpy(), q[0], rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(upper.numpy(), q[1], rtol=RTOL, atol=1e-12)


def test_interval_handles_inputs_beyond_torch_quantile_limit() -> None:
    samples = torch.rand(5, 2**22 + 3)  # 2**24 + 15 elements: too many for torch.quantile
    lower, upper = interval(samples.unsqueeze(1), 0.5)
    assert lower.shape == (1, 2**22 + 3)
    assert torch.equal(lower[0], torch.sort(samples, dim=0).values[1])


def test_coverage_and_width_match_numpy() -> None:
    samples, target = _ensemble(s=15)
    lower, upper = np.quantile(samples.numpy(), [0.05, 0.95], axis=0)
    t = target.numpy()
    b = t.shape[0]
    expected_cov = ((lower <= t) & (t <= upper)).reshape(b, -1).mean(axis=1)
    expected_width = (upper - lower).reshape(b, -1).mean(axis=1)
    cov, width = coverage_and_width(samples, target, 0.9)
    assert cov.shape == width.shape == (b,)
    np.testing.assert_allclose(cov.numpy(), expected_cov, rtol=RTOL)
    np.testing.assert_allclose(width.numpy(), expected_width, rtol=RTOL)


def test_calibrated_gaussian_ensemble_covers_nominal_level() -> None:
    samples = _rand(1000, 2, 2000, seed=8, dtype=torch.float32)
    target = _rand(2, 2000, seed=9, dtype=torch.float32)
    cov, width = coverage_and_width(samples, target, 0.9)
    assert torch.allclose(cov, torch.full_like(cov, 0.9), atol=0.02)
    assert torch.allclose(width, torch.full_like(width, 2 * 1.6449), rtol=0.02)


def test_sample_stats_unbiased_and_rejects_single_sample() -> None:
    samples, _ = _ensemble(s=6)
    mean, std = sample_stats(samples)
    np.testing.assert_allclose(mean.numpy(), samples.numpy().mean(axis=0), rtol=RTOL)
    np.testing.assert_allclose(std.numpy(), samples.numpy().std(axis=0, ddof=1), rtol=RTOL)
    with pytest.raises(ValueError, match="at least 2"):
        sample_stats(samples[:1])


# ------------------------------------------------------------------------------------------
# dtypes, shape checks, proper-score sanity
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_functions_keep_dtype(dtype: torch.dtype) -> None:
    samples, target = _ensemble(s=4)
    samples, target = samples.to(dtype), target.to(dtype)
    outputs = [
        relative_l2(samples[0], target),
        rmse(samples[0], target),
        crps_ensemble(samples, target),
        crps_ensemble(samples, target, fair=True),
        crps_gaussian(target, target.abs() + 1, target),
        energy_score(samples, target),
        energy_score(samples, target, fair=True),
        gaussian_nll(target, target.abs() + 1, target),
        *interval(samples),
        *coverage_and_width(samples, target),
        *sample_stats(samples),
    ]
    assert all(out.dtype == dtype for out in outputs)


def test_shape_mismatches_raise_value_error() -> None:
    samples, target = _ensemble(s=4, b=3)
    bad_target = target[:2]
    pattern = r"\(4, 3, 2, 5, 6\)|\(3, 2, 5, 6\)"
    for call in (
        lambda: relative_l2(samples[0], bad_target),
        lambda: rmse(samples[0], bad_target),
        lambda: crps_ensemble(samples, bad_target),
        lambda: crps_ensemble(samples, bad_target, fair=True),
        lambda: crps_gaussian(target, target, bad_target),
        lambda: energy_score(samples, bad_target),
        lambda: gaussian_nll(target, target, bad_target),
        lambda: coverage_and_width(samples, bad_target),
        lambda: ScoreAccumulator().update(samples, bad_target),
        lambda: ScoreAccumulator().update(None, bad_target, mean=target),
    ):
        with pytest.raises(ValueError, match=pattern):
            call()
    with pytest.raises(ValueError, match="level"):
        interval(samples, level=1.0)


def test_proper_scores_prefer_the_true_distribution() -> None:
    gen = torch.Generator().manual_seed(10)
    target = torch.randn(8, 64, generator=gen, dtype=torch.float64)
    good = torch.randn(50, 8, 64, generator=gen, dtype=torch.float64)
    biased = good + 1.0
    underdispersed = 0.3 * good
    for fn in (
        lambda x: crps_ensemble(x, target).mean(),
        lambda x: crps_ensemble(x, target, fair=True).mean(),
        lambda x: energy_score(x, target).mean(),
        lambda x: energy_score(x, target, fair=True).mean(),
    ):
        assert fn(good) < fn(biased)
        assert fn(good) < fn(underdispersed)


# ------------------------------------------------------------------------------------------
# ScoreAccumulator
# ------------------------------------------------------------------------------------------


_LEVEL_PCTS = (50, 80, 90, 95, 99)
_PROBABILISTIC_KEYS = {
    "rel_l2",
    "rmse",
    "crps",
    "crps_fair",
    "energy_score",
    "nll",
    "sharpness",
    *(f"{name}_{pct}" for pct in _LEVEL_PCTS for name in ("coverage", "width", "interval_score")),
    "ece",
    "n",
}


def test_accumulator_is_independent_of_batch_split() -> None:
    samples, target = _ensemble(s=8, b=10)
    whole = ScoreAccumulator()
    whole.update(samples, target)
    split = ScoreAccumulator()
    for lo, hi in ((0, 3), (3, 8), (8, 10)):
        split.update(samples[:, lo:hi], target[lo:hi])
    a, b = whole.compute(), split.compute()
    assert set(a) == _PROBABILISTIC_KEYS
    assert a["n"] == b["n"] == 10
    for key in a:
        assert isinstance(a[key], float | int)
        assert a[key] == pytest.approx(b[key], rel=1e-12)
    curves_a, curves_b = whole.curves(), split.curves()
    assert curves_a.keys() == curves_b.keys()
    for key in ("quantile_levels", "interval_levels", "pit_edges", "pit_hist"):
        assert curves_a[key] == curves_b[key]  # the PIT generator draws in point order
    for key in ("quantile_shares", "interval_coverage"):
        assert curves_a[key] == pytest.approx(curves_b[key], rel=1e-12)


def test_accumulator_matches_the_per_field_functions() -> None:
    samples, target = _ensemble(s=8, b=10)
    acc = ScoreAccumulator(seed=3)
    acc.update(samples[:, :4], target[:4])
    acc.update(samples[:, 4:], target[4:])
    out, curves = acc.compute(), acc.curves()
    mean, std = sample_stats(samples)
    expected = {
        "rel_l2": relative_l2(mean, target).mean(),
        "rmse": rmse(mean, target).mean(),
        "crps": crps_ensemble(samples, target).mean(),
        "crps_fair": crps_ensemble(samples, target, fair=True).mean(),
        "energy_score": energy_score(samples, target).mean(),
        "nll": gaussian_nll(mean, std, target).mean(),
        "sharpness": sharpness(samples).mean(),
    }
    coverages = []
    for pct in _LEVEL_PCTS:
        level = pct / 100
        cov, width = coverage_and_width(samples, target, level)
        coverages.append(float(cov.mean()))
        expected[f"coverage_{pct}"] = cov.mean()
        expected[f"width_{pct}"] = width.mean()
        expected[f"interval_score_{pct}"] = interval_score(
            *interval(samples, level), target, level
        ).mean()
    shares = quantile_calibration(samples, target).mean(dim=1)
    expected["ece"] = calibration_error(shares)
    for key, value in expected.items():
        assert out[key] == pytest.approx(float(value), rel=1e-10), key
    # the curves: same quantile levels and shares, coverages, and the PIT of the same generator
    assert curves["quantile_levels"] == pytest.approx([k / 20 for k in range(1, 20)], abs=0)
    assert curves["quantile_shares"] == pytest.approx(shares.tolist(), rel=1e-12)
    assert curves["interval_levels"] == [0.5, 0.8, 0.9, 0.95, 0.99]
    assert curves["interval_coverage"] == pytest.approx(coverages, rel=1e-12)
    pit_values = pit(samples, target, generator=torch.Generator().manual_seed(3))
    assert curves["pit_hist"] == pit_histogram(pit_values, 20).tolist()
    assert sum(curves["pit_hist"]) == target.numel()
    assert curves["pit_edges"] == pytest.approx(np.linspace(0, 1, 21).tolist(), abs=1e-15)
    assert json.loads(json.dumps(curves)) == curves  # plain lists of floats and ints


def test_accumulator_levels_and_pit_options() -> None:
    samples, target = _ensemble(s=5, b=4)
    acc = ScoreAccumulator(level=0.75, levels=(0.9, 0.5), quantile_levels=(0.25, 0.5, 0.75),
                           pit_bins=4)
    acc.update(samples, target)
    out, curves = acc.compute(), acc.curves()
    assert {key for key in out if key.startswith("coverage_")} == {
        "coverage_50",
        "coverage_75",
        "coverage_90",
    }
    assert curves["interval_levels"] == [0.5, 0.75, 0.9]
    assert len(curves["quantile_shares"]) == 3 and len(curves["pit_hist"]) == 4
    assert acc.level == 0.75
    with pytest.raises(ValueError, match="clashing"):
        ScoreAccumulator(levels=(0.9, 0.899))
    with pytest.raises(ValueError, match="levels"):
        ScoreAccumulator(levels=(0.5, 1.5))
    with pytest.raises(ValueError, match="pit_bins"):
        ScoreAccumulator(pit_bins=0)
    # another seed gives another randomisation, but the same counts in total
    other = ScoreAccumulator(level=0.75, levels=(0.9, 0.5), quantile_levels=(0.25, 0.5, 0.75),
                             pit_bins=4, seed=1)
    other.update(samples, target)
    assert sum(other.curves()["pit_hist"]) == sum(curves["pit_hist"]) == target.numel()


def test_accumulator_deterministic_mode_reports_only_error_keys() -> None:
    samples, target = _ensemble(s=1, b=6)
    pred = samples[0]
    acc = ScoreAccumulator()
    acc.update(None, target[:2], mean=pred[:2])
    acc.update(None, target[2:], mean=pred[2:])
    out = acc.compute()
    assert set(out) == {"rel_l2", "rmse", "crps", "energy_score", "n"}
    assert out["n"] == 6
    assert out["crps"] == pytest.approx(float((pred - target).abs().mean()), rel=1e-12)
    assert out["energy_score"] == pytest.approx(float(rmse(pred, target).mean()), rel=1e-12)
    assert out["rel_l2"] == pytest.approx(float(relative_l2(pred, target).mean()), rel=1e-12)
    with pytest.raises(ValueError, match="deterministic accumulator"):
        acc.curves()


def test_accumulator_rejects_mixing_and_bad_calls() -> None:
    samples, target = _ensemble(s=4, b=3)
    acc = ScoreAccumulator()
    acc.update(samples, target)
    with pytest.raises(ValueError, match="mix"):
        acc.update(None, target, mean=samples[0])
    det = ScoreAccumulator()
    det.update(None, target, mean=samples[0])
    with pytest.raises(ValueError, match="mix"):
        det.update(samples, target)
    with pytest.raises(ValueError):
        ScoreAccumulator().update(None, target)  # no prediction at all
    with pytest.raises(ValueError, match="S >= 2"):
        ScoreAccumulator().update(samples[:1], target)
    with pytest.raises(ValueError, match="before any update"):
        ScoreAccumulator().compute()
    with pytest.raises(ValueError, match="before any update"):
        ScoreAccumulator().curves()


def test_accumulator_level_names_and_mean_override() -> None:
    samples, target = _ensemble(s=5, b=4)
    acc = ScoreAccumulator(level=0.5)
    point = samples[0]
    acc.update(samples, target, mean=point)
    out = acc.compute()
    assert "coverage_50" in out and "width_50" in out
    assert out["rel_l2"] == pytest.approx(float(relative_l2(point, target).mean()), rel=1e-12)
