"""Prediction intervals, calibration and sharpness of an ensemble forecast (pure torch).

The quantile layer that ``model.metrics`` builds on: central intervals at one or many levels,
the interval (Winkler) score, the randomised PIT, the quantile calibration curve with its
expected calibration error, and sharpness. It also holds the input checks both modules share,
so the dependency runs one way (``metrics`` imports ``intervals``, never the reverse).

Shape conventions (as in ``model.metrics``):

* ``samples``: ``(S, B, *field)`` -- ``S`` draws for each of the ``B`` fields of a batch.
* ``target``, interval bounds and pointwise scores: ``(B, *field)``.
* Per-field summaries are ``(B,)``; results at several levels get a leading level dim.

Quantiles use linear interpolation between order statistics (numpy's default
``method="linear"``), computed by hand from one sort: torch.quantile refuses inputs above 2**24
elements and would sort again for every level. All functions are vectorised, keep the input
dtype and raise ``ValueError`` naming the offending shapes or values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "LEVELS",
    "QUANTILE_LEVELS",
    "calibration_error",
    "central_intervals",
    "coverage_and_width",
    "coverage_and_width_at_levels",
    "interval",
    "interval_score",
    "pit",
    "pit_histogram",
    "quantile_calibration",
    "sharpness",
]

#: Nominal levels of the central intervals reported by default.
LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.99)
#: Quantile levels of the calibration curve: 0.05, 0.10, ..., 0.95.
QUANTILE_LEVELS: tuple[float, ...] = tuple(k / 20 for k in range(1, 20))


# --------------------------------------------------------------------------------------------
# input checks (shared with model.metrics)
# --------------------------------------------------------------------------------------------


def _check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} shape {tuple(a.shape)} does not match {name_b} shape {tuple(b.shape)}"
        )
    if a.dim() < 1:
        raise ValueError(f"{name_a} needs a batch dim (B, *field), got shape {tuple(a.shape)}")


def _check_samples(samples: Tensor, target: Tensor | None = None, min_samples: int = 1) -> None:
    if samples.dim() < 2:
        raise ValueError(
            f"samples must have shape (S, B, *field), got shape {tuple(samples.shape)}"
        )
    if samples.shape[0] < min_samples:
        raise ValueError(
            f"samples needs at least {min_samples} sample{'s' if min_samples > 1 else ''}, "
            f"got shape {tuple(samples.shape)}"
        )
    if target is not None and samples.shape[1:] != target.shape:
        raise ValueError(
            f"samples shape {tuple(samples.shape)} is not (S, *target.shape) for target shape "
            f"{tuple(target.shape)}"
        )


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")


def _check_levels(levels: Sequence[float], name: str = "levels") -> tuple[float, ...]:
    out = tuple(float(level) for level in levels)
    if not out:
        raise ValueError(f"{name} must not be empty")
    bad = [level for level in out if not 0.0 < level < 1.0]
    if bad:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {bad}")
    return out


def _level_shape(values: Sequence[float], like: Tensor, dims: int) -> Tensor:
    """``values`` as a ``(len(values), 1, ..., 1)`` tensor that broadcasts over ``dims`` dims."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).reshape(
        (len(values),) + (1,) * dims
    )


# --------------------------------------------------------------------------------------------
# quantiles and central intervals
# --------------------------------------------------------------------------------------------


def _quantiles_sorted(sorted_samples: Tensor, qs: Sequence[float]) -> Tensor:
    """Quantiles ``qs`` along dim 0 of already sorted samples, numpy's ``"linear"`` method.

    ``sorted_samples``: ``(S, ...)``. Returns ``(len(qs), ...)``.
    """
    n = sorted_samples.shape[0]
    pos = [q * (n - 1) for q in qs]  # numpy's virtual index for method="linear"
    lo = [min(math.floor(p), n - 1) for p in pos]
    hi = [min(i + 1, n - 1) for i in lo]
    frac = _level_shape([p - i for p, i in zip(pos, lo, strict=True)], sorted_samples,
                        sorted_samples.dim() - 1)
    device = sorted_samples.device
    lower = sorted_samples[torch.tensor(lo, device=device)]
    upper = sorted_samples[torch.tensor(hi, device=device)]
    return lower + frac * (upper - lower)


def _central_sorted(sorted_samples: Tensor, levels: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Bounds of the central intervals at ``levels``, each ``(L, ...)``, from sorted samples."""
    qs = [(1.0 - level) / 2.0 for level in levels] + [(1.0 + level) / 2.0 for level in levels]
    bounds = _quantiles_sorted(sorted_samples, qs)
    return bounds[: len(levels)], bounds[len(levels) :]


def interval(samples: Tensor, level: float = 0.9) -> tuple[Tensor, Tensor]:
    """Empirical central prediction interval over the sample axis.

    Quantiles ``(1 - level) / 2`` and ``(1 + level) / 2`` with linear interpolation between order
    statistics (numpy's default ``method="linear"``).

    Args:
        samples: ``(S, B, *field)`` ensemble.
        level: nominal coverage in ``(0, 1)``.

    Returns:
        ``(lower, upper)``, each ``(B, *field)``.
    """
    _check_samples(samples)
    _check_level(level)
    lower, upper = _central_sorted(torch.sort(samples, dim=0).values, (level,))
    return lower[0], upper[0]


def central_intervals(samples: Tensor, levels: Sequence[float] = LEVELS) -> tuple[Tensor, Tensor]:
    """Central prediction intervals at several levels from a single sort of the samples.

    Args:
        samples: ``(S, B, *field)`` ensemble.
        levels: ``L`` nominal coverages in ``(0, 1)``.

    Returns:
        ``(lower, upper)``, each ``(L, B, *field)``; entry ``i`` equals ``interval(samples,
        levels[i])``.
    """
    _check_samples(samples)
    levels = _check_levels(levels)
    return _central_sorted(torch.sort(samples, dim=0).values, levels)


def _coverage_width_from_bounds(
    lower: Tensor, upper: Tensor, target: Tensor
) -> tuple[Tensor, Tensor]:
    """Share of points inside and mean width per field; bounds ``(*lead, B, *field)``.

    Returns two ``(*lead, B)`` tensors (``lead`` is empty or a level dim).
    """
    start = lower.dim() - target.dim() + 1  # first field dim of the bounds
    inside = (lower <= target) & (target <= upper)
    coverage = inside.flatten(start).to(target.dtype).mean(dim=-1)
    width = (upper - lower).flatten(start).mean(dim=-1)
    return coverage, width


def coverage_and_width(
    samples: Tensor, target: Tensor, level: float = 0.9
) -> tuple[Tensor, Tensor]:
    """Empirical coverage and mean width of the central ``level`` interval.

    Args:
        samples: ``(S, B, *field)`` ensemble.
        target: ``(B, *field)`` observation.
        level: nominal coverage in ``(0, 1)``.

    Returns:
        ``(coverage, width)``, each ``(B,)``: the share of field points with
        ``lower <= y <= upper`` and the mean of ``upper - lower`` over the field.
    """
    _check_samples(samples, target)
    lower, upper = interval(samples, level)
    return _coverage_width_from_bounds(lower, upper, target)


def coverage_and_width_at_levels(
    samples: Tensor, target: Tensor, levels: Sequence[float] = LEVELS
) -> tuple[Tensor, Tensor]:
    """Coverage and mean width of the central intervals at several levels, from one sort.

    Args:
        samples: ``(S, B, *field)`` ensemble.
        target: ``(B, *field)`` observation.
        levels: ``L`` nominal coverages in ``(0, 1)``.

    Returns:
        ``(coverage, width)``, each ``(L, B)``; row ``i`` equals ``coverage_and_width(samples,
        target, levels[i])``.
    """
    _check_samples(samples, target)
    lower, upper = central_intervals(samples, levels)
    return _coverage_width_from_bounds(lower, upper, target)


def _winkler(lower: Tensor, upper: Tensor, target: Tensor, alpha: float | Tensor) -> Tensor:
    # (l - y) 1{y < l} = max(l - y, 0), likewise above: clamp keeps it branch-free
    miss = torch.clamp(lower - target, min=0.0) + torch.clamp(target - upper, min=0.0)
    return (upper - lower) + (2.0 / alpha) * miss


def interval_score(lower: Tensor, upper: Tensor, target: Tensor, level: float) -> Tensor:
    """Pointwise interval (Winkler) score of the central ``level`` interval ``[lower, upper]``.

    ``(u - l) + (2 / alpha) (l - y) 1{y < l} + (2 / alpha) (y - u) 1{y > u}`` with
    ``alpha = 1 - level`` (Gneiting and Raftery 2007; scoringrules ``interval_score`` with its
    ``alpha`` argument set to ``1 - level``). Lower is better; it is proper for the
    ``alpha / 2`` and ``1 - alpha / 2`` quantiles.

    Args:
        lower: ``(B, *field)`` lower bound.
        upper: ``(B, *field)`` upper bound.
        target: ``(B, *field)`` observation.
        level: nominal coverage in ``(0, 1)``.

    Returns:
        ``(B, *field)`` score per point, in the units of the field. Differentiable in the bounds.
    """
    _check_same_shape("lower", lower, "target", target)
    _check_same_shape("upper", upper, "target", target)
    _check_level(level)
    return _winkler(lower, upper, target, 1.0 - level)


# --------------------------------------------------------------------------------------------
# calibration and sharpness
# --------------------------------------------------------------------------------------------


def pit(samples: Tensor, target: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Randomised probability integral transform of the target under the ensemble.

    ``(#{X_s < y} + U (#{X_s == y} + 1)) / (S + 1)`` with ``U ~ Uniform[0, 1)`` per point: the
    rank of ``y`` among the ``S + 1`` values ``{X_1..X_S, y}`` with ties broken at random. When
    ``y`` and the samples are exchangeable draws of one distribution (discrete ones included) it
    is uniform on ``[0, 1]``; a U shape means too narrow, a hump too wide, a slope a bias.

    Args:
        samples: ``(S, B, *field)`` ensemble (need not be sorted).
        target: ``(B, *field)`` observation.
        generator: source of ``U``; it is drawn on the generator's device (``target.dtype``) and
            moved to the target's, so a CPU generator gives the same values on any device. None
            uses torch's global RNG.

    Returns:
        ``(B, *field)`` PIT values in ``[0, 1]``.
    """
    _check_samples(samples, target)
    device = target.device if generator is None else generator.device
    u = torch.rand(target.shape, generator=generator, dtype=target.dtype, device=device)
    below = (samples < target).sum(dim=0).to(target.dtype)
    ties = (samples == target).sum(dim=0).to(target.dtype)
    return (below + u.to(target.device) * (ties + 1.0)) / (samples.shape[0] + 1)


def pit_histogram(pit_values: Tensor, bins: int = 20) -> Tensor:
    """Counts of PIT values in ``bins`` equal bins on ``[0, 1]`` (the last bin closed).

    Args:
        pit_values: PIT values of any shape, all in ``[0, 1]``.
        bins: number of bins, at least 1.

    Returns:
        ``(bins,)`` int64 counts, as ``numpy.histogram(pit_values, bins, range=(0, 1))``.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    flat = pit_values.flatten()
    if not bool(((flat >= 0) & (flat <= 1)).all()):
        raise ValueError("pit_values must lie in [0, 1] (and not be NaN)")
    idx = torch.clamp((flat * bins).floor().long(), max=bins - 1)
    return torch.bincount(idx, minlength=bins)


def _quantile_shares_sorted(
    sorted_samples: Tensor, target: Tensor, quantile_levels: Sequence[float]
) -> Tensor:
    """``(T, B)`` share of each field's points with ``y <= q_tau``, from sorted samples."""
    below = target <= _quantiles_sorted(sorted_samples, quantile_levels)  # (T, B, *field)
    return below.flatten(2).to(target.dtype).mean(dim=-1)


def quantile_calibration(
    samples: Tensor, target: Tensor, quantile_levels: Sequence[float] = QUANTILE_LEVELS
) -> Tensor:
    """Quantile calibration curve: empirical share of points at or below each sample quantile.

    For a calibrated forecast the share at level ``tau`` is ``tau``; average the ``(T, B)``
    result over ``B`` to pool the batch (all fields have the same number of points).

    Args:
        samples: ``(S, B, *field)`` ensemble.
        target: ``(B, *field)`` observation.
        quantile_levels: ``T`` levels ``tau`` in ``(0, 1)``.

    Returns:
        ``(T, B)``: row ``t`` is the share of each field's points with ``y <= q_tau`` (``q_tau``
        the sample quantile, numpy's ``"linear"`` method).
    """
    _check_samples(samples, target)
    quantile_levels = _check_levels(quantile_levels, "quantile_levels")
    sorted_samples = torch.sort(samples, dim=0).values
    return _quantile_shares_sorted(sorted_samples, target, quantile_levels)


def calibration_error(shares: Tensor, quantile_levels: Sequence[float] = QUANTILE_LEVELS) -> Tensor:
    """Expected calibration error ``mean_tau |tau - share_tau|`` of a quantile calibration curve.

    Args:
        shares: ``(T, ...)`` empirical shares from ``quantile_calibration``: ``(T, B)`` gives
            one ECE per field, its mean over ``B`` (``(T,)``) the ECE of the pooled batch.
        quantile_levels: the ``T`` levels the shares were computed at.

    Returns:
        ``shares.shape[1:]``: 0 for perfect calibration, at most ``max(tau, 1 - tau)`` averaged.
    """
    quantile_levels = _check_levels(quantile_levels, "quantile_levels")
    if shares.dim() < 1 or shares.shape[0] != len(quantile_levels):
        raise ValueError(
            f"shares shape {tuple(shares.shape)} does not start with the "
            f"{len(quantile_levels)} quantile levels"
        )
    taus = _level_shape(quantile_levels, shares, shares.dim() - 1)
    return (shares - taus).abs().mean(dim=0)


def sharpness(samples: Tensor) -> Tensor:
    """Mean predictive standard deviation (unbiased, over the samples) of each field.

    Args:
        samples: ``(S, B, *field)`` ensemble with ``S >= 2``.

    Returns:
        ``(B,)`` spread in the units of the field; smaller is sharper (only a virtue when the
        forecast is also calibrated).
    """
    _check_samples(samples, min_samples=2)
    return torch.std(samples, dim=0, correction=1).flatten(1).mean(dim=1)


def _calibration_terms(
    sorted_samples: Tensor,
    target: Tensor,
    levels: Sequence[float],
    quantile_levels: Sequence[float],
) -> dict[str, Tensor]:
    """Per-field interval and calibration summaries of one batch, from one sort.

    Returns ``coverage``, ``width`` and ``interval_score`` (each ``(L, B)``, means over the field)
    and ``quantile_shares`` (``(T, B)``).
    """
    lower, upper = _central_sorted(sorted_samples, levels)  # (L, B, *field)
    coverage, width = _coverage_width_from_bounds(lower, upper, target)
    alphas = _level_shape([1.0 - level for level in levels], target, target.dim())
    score = _winkler(lower, upper, target, alphas).flatten(2).mean(dim=-1)
    return {
        "coverage": coverage,
        "width": width,
        "interval_score": score,
        "quantile_shares": _quantile_shares_sorted(sorted_samples, target, quantile_levels),
    }
