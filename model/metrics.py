"""Accuracy and uncertainty metrics for (probabilistic) neural-operator predictions.

Pure torch: no scoring library is imported here, so the same code serves as a training loss
(autograd) and as the evaluation metric, and the tests can check it against independent
references (scoringrules, scipy, numpy).

Shape conventions used throughout:

* ``samples``: ``(S, B, *field)`` -- ``S`` draws from the predictive distribution for each of the
  ``B`` output fields of a batch; ``field`` may have any number of dims, e.g. ``(C, H, W)``.
* ``target`` and deterministic predictions: ``(B, *field)``.

All functions are vectorised, keep the input dtype (float32 or float64) and raise ``ValueError``
naming the offending shapes when inputs do not line up.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "ScoreAccumulator",
    "coverage_and_width",
    "crps_ensemble",
    "energy_score",
    "gaussian_nll",
    "interval",
    "relative_l2",
    "rmse",
    "sample_stats",
]

# Above this many elements for the (pairs, B, d) difference tensor, energy_score switches from
# exact pairwise differences to the Gram-matrix form, whose memory is only (B, S, S). 2**24
# elements are 64 MiB in float32; the S = 3 training loss always takes the exact path.
_PAIRWISE_DIRECT_MAX_ELEMENTS = 2**24


# --------------------------------------------------------------------------------------------
# shape checks
# --------------------------------------------------------------------------------------------


def _check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} shape {tuple(a.shape)} does not match {name_b} shape {tuple(b.shape)}"
        )
    if a.dim() < 1:
        raise ValueError(f"{name_a} needs a batch dim (B, *field), got shape {tuple(a.shape)}")


def _check_samples(samples: Tensor, target: Tensor | None = None) -> None:
    if samples.dim() < 2:
        raise ValueError(
            f"samples must have shape (S, B, *field), got shape {tuple(samples.shape)}"
        )
    if samples.shape[0] < 1:
        raise ValueError(f"samples needs at least one sample, got shape {tuple(samples.shape)}")
    if target is not None and samples.shape[1:] != target.shape:
        raise ValueError(
            f"samples shape {tuple(samples.shape)} is not (S, *target.shape) for target shape "
            f"{tuple(target.shape)}"
        )


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")


def _field_dims(x: Tensor, first: int) -> tuple[int, ...]:
    """Dims from ``first`` to the end: the field dims once batch (and sample) dims are skipped."""
    return tuple(range(first, x.dim()))


# --------------------------------------------------------------------------------------------
# deterministic errors
# --------------------------------------------------------------------------------------------


def relative_l2(pred: Tensor, target: Tensor) -> Tensor:
    """Relative L2 error ``||pred - target||_2 / ||target||_2`` per field.

    Args:
        pred: ``(B, *field)`` prediction.
        target: ``(B, *field)`` ground truth.

    Returns:
        ``(B,)`` relative error over all field dims. Differentiable in ``pred`` (the gradient is 0,
        not NaN, where ``pred == target``). A zero target field gives ``inf``/``nan`` by design:
        the relative error is undefined there and should not be silently hidden.
    """
    _check_same_shape("pred", pred, "target", target)
    diff = (pred - target).flatten(1)
    return torch.linalg.vector_norm(diff, dim=1) / torch.linalg.vector_norm(
        target.flatten(1), dim=1
    )


def rmse(pred: Tensor, target: Tensor) -> Tensor:
    """Root-mean-square error per field.

    Args:
        pred: ``(B, *field)`` prediction.
        target: ``(B, *field)`` ground truth.

    Returns:
        ``(B,)`` RMSE over all field dims.
    """
    _check_same_shape("pred", pred, "target", target)
    return (pred - target).flatten(1).square().mean(dim=1).sqrt()


# --------------------------------------------------------------------------------------------
# proper scores
# --------------------------------------------------------------------------------------------


def _crps_sorted_errors(err_sorted: Tensor) -> Tensor:
    """CRPS (energy form, V-statistic) from sample errors ``X_i - y`` sorted along dim 0.

    ``err_sorted``: ``(S, B, *field)``. Returns ``(B, *field)``.

    Working with ``X - y`` instead of ``X`` centres the values at the target: both the
    ``E|X - y|`` and the spread term are shift invariant, and centring avoids the cancellation
    the weighted sum below would otherwise suffer when fields have a large offset.
    """
    n = err_sorted.shape[0]
    # sum_{i<j} (x_(j) - x_(i)) = sum_i (2i - S - 1) x_(i) with 1-indexed ranks i
    ranks = torch.arange(1, n + 1, dtype=err_sorted.dtype, device=err_sorted.device)
    weights = (2.0 * ranks - n - 1).reshape((n,) + (1,) * (err_sorted.dim() - 1))
    half_pair_sum = (weights * err_sorted).sum(dim=0)
    # 1/2 * 1/S^2 * sum_{j,k} |x_j - x_k| = 1/S^2 * sum_{i<j} |x_(j) - x_(i)|
    return err_sorted.abs().mean(dim=0) - half_pair_sum / (n * n)


def crps_ensemble(samples: Tensor, target: Tensor) -> Tensor:
    """Pointwise CRPS of the empirical distribution of the samples.

    Energy form with the V-statistic pair term, ``E|X - y| - 1/2 E|X - X'|`` where both
    expectations are over the empirical distribution (``1/S^2`` for the pair term); this is
    scoringrules' ``estimator="nrg"``. Computed in ``O(S log S)`` per point by sorting, never by
    materialising the ``S x S`` pairs. With ``S = 1`` it is the absolute error ``|x - y|``.

    Args:
        samples: ``(S, B, *field)`` ensemble.
        target: ``(B, *field)`` observation.

    Returns:
        ``(B, *field)`` CRPS per point. Differentiable in ``samples``.
    """
    _check_samples(samples, target)
    err_sorted = torch.sort(samples - target.unsqueeze(0), dim=0).values
    return _crps_sorted_errors(err_sorted)


def _safe_sqrt(sq: Tensor) -> Tensor:
    """sqrt with a finite gradient at 0.

    Clamping first makes the derivative exactly 0 where ``sq`` is 0 (clamp passes no gradient
    below its floor), e.g. for two identical dropout samples; without it autograd yields
    ``0 * inf = nan``.
    """
    return torch.sqrt(torch.clamp(sq, min=torch.finfo(sq.dtype).tiny))


def _pair_distance_sum_direct(flat: Tensor) -> Tensor:
    """``sum_{j,k} ||X_j - X_k||_RMS`` by exact differences over the ``S (S-1) / 2`` pairs.

    ``flat``: ``(S, B, d)``. Returns ``(B,)``. Memory ``O(S^2 B d)``; exact (no cancellation).
    """
    n = flat.shape[0]
    idx_j, idx_k = torch.triu_indices(n, n, offset=1, device=flat.device)
    diff = flat[idx_j] - flat[idx_k]  # (P, B, d)
    dist = _safe_sqrt(diff.square().mean(dim=-1))  # (P, B), RMS norm
    # each unordered pair appears twice in the full double sum
    return 2.0 * dist.sum(dim=0)


def _pair_distance_sum_gram(flat: Tensor) -> Tensor:
    """``sum_{j,k} ||X_j - X_k||_RMS`` via the Gram matrix, memory ``O(B S^2)`` beyond the input.

    ``flat``: ``(S, B, d)``. Returns ``(B,)``.
    """
    x = flat.transpose(0, 1)  # (B, S, d)
    # Distances are shift invariant; centring at the ensemble mean keeps the Gram entries at
    # the scale of the spread, so |a|^2 + |b|^2 - 2<a, b> does not cancel catastrophically for
    # fields with a large common offset.
    x = x - x.mean(dim=1, keepdim=True)
    gram = torch.bmm(x, x.transpose(1, 2))  # (B, S, S)
    sqnorm = torch.diagonal(gram, dim1=1, dim2=2)  # (B, S)
    norm_sum = sqnorm.unsqueeze(2) + sqnorm.unsqueeze(1)
    sq = norm_sum - 2.0 * gram
    # Anything below the rounding noise of the Gram form is a (numerically) coinciding pair:
    # give it distance 0 with zero gradient instead of a huge 1/sqrt(noise) gradient.
    noise = (torch.finfo(sq.dtype).eps * 8.0) * norm_sum.detach()
    eye = torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
    keep = (sq > noise) & ~eye
    # double where: the masked branch never sees a non-positive argument, so no NaN gradient
    dist = torch.where(keep, torch.sqrt(torch.where(keep, sq, torch.ones_like(sq))), 0.0)
    return dist.sum(dim=(1, 2)) / math.sqrt(flat.shape[-1])


def energy_score(samples: Tensor, target: Tensor, fair: bool = False) -> Tensor:
    """Multivariate energy score over the whole field, with the RMS norm.

    ``ES = mean_j ||X_j - y|| - c * sum_{j,k} ||X_j - X_k||`` with ``||v|| = ||v||_2 / sqrt(d)``
    (``d`` = number of field values, so the score does not grow with resolution) and
    ``c = 1 / (2 S^2)`` (``fair=False``, V-statistic, scoringrules ``"nrg"``) or
    ``c = 1 / (2 S (S - 1))`` (``fair=True``, unbiased, scoringrules ``"fair"``).

    Used with ``fair=True`` and ``S = 3`` as the training loss of the energy-score PNO (Bulte,
    Scholl and Kutyniok 2025). Gradients stay finite when samples coincide exactly or equal the
    target.

    Args:
        samples: ``(S, B, *field)`` ensemble; ``S >= 2`` when ``fair=True``.
        target: ``(B, *field)`` observation.
        fair: use the unbiased pair term.

    Returns:
        ``(B,)`` energy score per field.
    """
    _check_samples(samples, target)
    n = samples.shape[0]
    if fair and n < 2:
        raise ValueError(
            f"fair energy score needs at least 2 samples, got samples shape {tuple(samples.shape)}"
        )
    flat = samples.flatten(2)  # (S, B, d)
    flat_target = target.flatten(1)  # (B, d)
    err = _safe_sqrt((flat - flat_target.unsqueeze(0)).square().mean(dim=-1))  # (S, B)
    score = err.mean(dim=0)
    if n == 1:
        # no pairs: the score of a point forecast is its RMS-norm distance
        return score
    num_pairs = n * (n - 1) // 2
    if num_pairs * flat.shape[1] * flat.shape[2] <= _PAIRWISE_DIRECT_MAX_ELEMENTS:
        pair_sum = _pair_distance_sum_direct(flat)
    else:
        pair_sum = _pair_distance_sum_gram(flat)
    c = 1.0 / (2.0 * n * (n - 1)) if fair else 1.0 / (2.0 * n * n)
    return score - c * pair_sum


def gaussian_nll(mean: Tensor, std: Tensor, target: Tensor, min_std: float = 1e-6) -> Tensor:
    """Pointwise Gaussian negative log-likelihood.

    ``0.5 log(2 pi s^2) + (y - m)^2 / (2 s^2)`` with ``s = clamp(std, min=min_std)``; the floor
    keeps a collapsed spread finite (and heavily penalised) instead of dividing by zero.

    Args:
        mean: ``(B, *field)`` predictive mean.
        std: ``(B, *field)`` predictive standard deviation.
        target: ``(B, *field)`` observation.
        min_std: floor on ``std``.

    Returns:
        ``(B, *field)`` NLL per point. Differentiable in ``mean`` and ``std``.
    """
    _check_same_shape("mean", mean, "target", target)
    _check_same_shape("std", std, "target", target)
    s = torch.clamp(std, min=min_std)
    return 0.5 * math.log(2.0 * math.pi) + torch.log(s) + (target - mean).square() / (2.0 * s * s)


# --------------------------------------------------------------------------------------------
# intervals and sample statistics
# --------------------------------------------------------------------------------------------


def _quantile_sorted(sorted_samples: Tensor, q: float) -> Tensor:
    """Quantile ``q`` along dim 0 of already sorted samples, numpy's ``"linear"`` method.

    ``sorted_samples``: ``(S, ...)``. Returns ``(...)``. Done by hand rather than with
    torch.quantile, which refuses inputs above 2**24 elements.
    """
    n = sorted_samples.shape[0]
    pos = q * (n - 1)  # numpy's virtual index for method="linear"
    lo = min(int(math.floor(pos)), n - 1)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    lower = sorted_samples[lo]
    return lower + frac * (sorted_samples[hi] - lower)


def _interval_sorted(sorted_samples: Tensor, level: float) -> tuple[Tensor, Tensor]:
    return (
        _quantile_sorted(sorted_samples, (1.0 - level) / 2.0),
        _quantile_sorted(sorted_samples, (1.0 + level) / 2.0),
    )


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
    return _interval_sorted(torch.sort(samples, dim=0).values, level)


def _coverage_width_from_bounds(
    lower: Tensor, upper: Tensor, target: Tensor
) -> tuple[Tensor, Tensor]:
    inside = (lower <= target) & (target <= upper)
    coverage = inside.flatten(1).to(target.dtype).mean(dim=1)
    width = (upper - lower).flatten(1).mean(dim=1)
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


def sample_stats(samples: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased standard deviation (``correction=1``) over the sample axis.

    Args:
        samples: ``(S, B, *field)`` ensemble with ``S >= 2``; a single sample has no spread, and
            reporting std 0 would pretend to a certainty the model never expressed.

    Returns:
        ``(mean, std)``, each ``(B, *field)``.
    """
    _check_samples(samples)
    if samples.shape[0] < 2:
        raise ValueError(
            f"sample_stats needs at least 2 samples for a spread, got shape {tuple(samples.shape)}"
        )
    std, mean = torch.std_mean(samples, dim=0, correction=1)
    return mean, std


# --------------------------------------------------------------------------------------------
# streaming aggregation
# --------------------------------------------------------------------------------------------

_DETERMINISTIC_KEYS = ("rel_l2", "rmse", "crps", "energy_score")


class ScoreAccumulator:
    """Streaming per-sample averages of the scores over many batches.

    Each ``update`` reduces its batch to per-field scores and adds their sums, so memory stays
    bounded however large the test set is, and the result does not depend on how the data were
    split into batches.

    Probabilistic batches (``samples`` with ``S >= 2``) accumulate ``rel_l2`` and ``rmse`` of the
    point prediction (the sample mean unless ``mean`` is given), ``crps`` (mean over points),
    ``energy_score`` (``fair=False``), ``nll`` (Gaussian with sample mean and unbiased std),
    ``coverage_{L}`` and ``width_{L}`` with ``L = round(level * 100)``.

    Deterministic batches (``update(None, target, mean=pred)``) accumulate only ``rel_l2``,
    ``rmse``, ``crps`` (= mean absolute error, the CRPS of a point forecast) and ``energy_score``
    (= RMS-norm distance); a model without uncertainty gets no NLL, coverage or width rather than
    a fake zero spread. Mixing both kinds in one accumulator raises ``ValueError``.
    """

    def __init__(self, level: float = 0.9) -> None:
        _check_level(level)
        self.level = level
        pct = round(level * 100)
        self._prob_keys = (
            *_DETERMINISTIC_KEYS,
            "nll",
            f"coverage_{pct}",
            f"width_{pct}",
        )
        self._mode: str | None = None
        self._sums: dict[str, float] = {}
        self._n = 0

    def _add(self, values: dict[str, Tensor]) -> None:
        for key, per_field in values.items():
            # float64 sums so the batch split does not change the result beyond rounding
            self._sums[key] = self._sums.get(key, 0.0) + float(
                per_field.detach().to(torch.float64).sum()
            )

    def _set_mode(self, mode: str) -> None:
        if self._mode is not None and self._mode != mode:
            raise ValueError(f"cannot mix {mode} and {self._mode} batches in one ScoreAccumulator")
        self._mode = mode

    @torch.no_grad()
    def update(self, samples: Tensor | None, target: Tensor, mean: Tensor | None = None) -> None:
        """Add one batch.

        Args:
            samples: ``(S, B, *field)`` with ``S >= 2``, or ``None`` for a deterministic model.
            target: ``(B, *field)`` ground truth.
            mean: ``(B, *field)`` point prediction. Required when ``samples`` is ``None``; for a
                probabilistic batch it optionally replaces the sample mean for ``rel_l2`` and
                ``rmse`` (``nll`` always uses the sample mean and std).
        """
        if samples is None:
            if mean is None:
                raise ValueError("a deterministic update needs mean=pred when samples is None")
            _check_same_shape("mean", mean, "target", target)
            self._set_mode("deterministic")
            point = mean.unsqueeze(0)  # S = 1: the scores reduce to the point-forecast errors
            self._add(
                {
                    "rel_l2": relative_l2(mean, target),
                    "rmse": rmse(mean, target),
                    "crps": crps_ensemble(point, target).flatten(1).mean(dim=1),
                    "energy_score": energy_score(point, target),
                }
            )
            self._n += target.shape[0]
            return

        _check_samples(samples, target)
        if samples.shape[0] < 2:
            raise ValueError(
                f"a probabilistic update needs S >= 2 samples, got shape {tuple(samples.shape)}; "
                "pass samples=None and mean=pred for a point forecast"
            )
        if mean is not None:
            _check_same_shape("mean", mean, "target", target)
        self._set_mode("probabilistic")
        sample_mean, sample_std = sample_stats(samples)
        point = sample_mean if mean is None else mean
        # one sort serves both the CRPS and the interval
        sorted_samples = torch.sort(samples, dim=0).values
        lower, upper = _interval_sorted(sorted_samples, self.level)
        coverage, width = _coverage_width_from_bounds(lower, upper, target)
        crps = _crps_sorted_errors(sorted_samples - target.unsqueeze(0))
        nll = gaussian_nll(sample_mean, sample_std, target)
        keys = self._prob_keys
        self._add(
            {
                "rel_l2": relative_l2(point, target),
                "rmse": rmse(point, target),
                "crps": crps.flatten(1).mean(dim=1),
                "energy_score": energy_score(samples, target),
                "nll": nll.flatten(1).mean(dim=1),
                keys[5]: coverage,
                keys[6]: width,
            }
        )
        self._n += target.shape[0]

    def compute(self) -> dict[str, float]:
        """Averages over all fields seen, as Python floats, plus ``n`` (the number of fields).

        Returns:
            ``{key: mean score}`` for the keys of the accumulator's mode, and ``"n"`` (an int).
        """
        if self._n == 0:
            raise ValueError("ScoreAccumulator.compute() called before any update")
        keys = _DETERMINISTIC_KEYS if self._mode == "deterministic" else self._prob_keys
        out: dict[str, float] = {key: self._sums[key] / self._n for key in keys}
        out["n"] = self._n
        return out
