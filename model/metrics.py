"""Accuracy and uncertainty metrics for (probabilistic) neural-operator predictions.

Pure torch: no scoring library is imported here, so the same code serves as a training loss
(autograd) and as the evaluation metric, and the tests can check it against independent
references (scoringrules, scipy, numpy). Point errors, proper scores and the streaming
``ScoreAccumulator`` live here; intervals, calibration and sharpness in ``model.intervals``
(``interval`` and ``coverage_and_width`` are re-exported from there).

Shape conventions used throughout:

* ``samples``: ``(S, B, *field)`` -- ``S`` draws from the predictive distribution for each of the
  ``B`` output fields of a batch; ``field`` may have any number of dims, e.g. ``(C, H, W)``.
* ``target`` and deterministic predictions: ``(B, *field)``.

All functions are vectorised, keep the input dtype (float32 or float64) and raise ``ValueError``
naming the offending shapes when inputs do not line up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from model.intervals import (
    LEVELS,
    QUANTILE_LEVELS,
    _calibration_terms,
    _check_level,
    _check_levels,
    _check_same_shape,
    _check_samples,
    calibration_error,
    coverage_and_width,
    interval,
    pit,
    pit_histogram,
)

__all__ = [
    "ScoreAccumulator",
    "coverage_and_width",
    "crps_ensemble",
    "crps_gaussian",
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


def _crps_terms(err_sorted: Tensor) -> tuple[Tensor, Tensor]:
    """The two sums of the ensemble CRPS from sample errors ``X_i - y`` sorted along dim 0.

    ``err_sorted``: ``(S, B, *field)``. Returns ``(mean_i |X_i - y|, sum_{i<j} |X_j - X_i|)``,
    each ``(B, *field)``; the full double sum of ``|X_j - X_k|`` is twice the second.

    Working with ``X - y`` instead of ``X`` centres the values at the target: both terms are
    shift invariant, and centring avoids the cancellation the weighted sum below would otherwise
    suffer when fields have a large offset.
    """
    n = err_sorted.shape[0]
    # sum_{i<j} (x_(j) - x_(i)) = sum_i (2i - S - 1) x_(i) with 1-indexed ranks i
    ranks = torch.arange(1, n + 1, dtype=err_sorted.dtype, device=err_sorted.device)
    weights = (2.0 * ranks - n - 1).reshape((n,) + (1,) * (err_sorted.dim() - 1))
    return err_sorted.abs().mean(dim=0), (weights * err_sorted).sum(dim=0)


def _crps_from_terms(abs_mean: Tensor, half_pair_sum: Tensor, n: int, fair: bool) -> Tensor:
    # 1/2 * c * sum_{j,k} |x_j - x_k| = c * sum_{i<j} |x_(j) - x_(i)|, c = 1/S^2 or 1/(S(S-1))
    return abs_mean - half_pair_sum / (n * (n - 1) if fair else n * n)


def crps_ensemble(samples: Tensor, target: Tensor, fair: bool = False) -> Tensor:
    """Pointwise CRPS of the ensemble, in the energy form ``E|X - y| - 1/2 E|X - X'|``.

    ``fair=False``: V-statistic pair term ``1 / (2 S^2) sum_{j,k} |x_j - x_k|``, the CRPS of the
    empirical distribution (scoringrules ``estimator="nrg"``); with ``S = 1`` it is ``|x - y|``.
    ``fair=True``: unbiased pair term ``1 / (2 S (S - 1)) sum_{j,k} |x_j - x_k|`` (scoringrules
    ``estimator="fair"``), an unbiased estimate of the CRPS of the distribution the ``S``
    exchangeable draws come from, so ensembles of different size compare fairly. Both are
    computed in ``O(S log S)`` per point by sorting, never by materialising the ``S x S`` pairs.

    Args:
        samples: ``(S, B, *field)`` ensemble; ``S >= 2`` when ``fair=True``.
        target: ``(B, *field)`` observation.
        fair: use the unbiased pair term.

    Returns:
        ``(B, *field)`` CRPS per point. Differentiable in ``samples``.
    """
    _check_samples(samples, target, min_samples=2 if fair else 1)
    err_sorted = torch.sort(samples - target.unsqueeze(0), dim=0).values
    return _crps_from_terms(*_crps_terms(err_sorted), samples.shape[0], fair)


def crps_gaussian(mean: Tensor, std: Tensor, target: Tensor) -> Tensor:
    """Closed-form pointwise CRPS of the Gaussian forecast ``N(mean, std^2)``.

    ``std * (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))`` with ``z = (y - mean) / std``
    (Gneiting et al. 2005; scoringrules ``crps_normal``). A zero ``std`` gives its limit, the
    absolute error ``|y - mean|``.

    Args:
        mean: ``(B, *field)`` predictive mean.
        std: ``(B, *field)`` predictive standard deviation, ``>= 0``.
        target: ``(B, *field)`` observation.

    Returns:
        ``(B, *field)`` CRPS per point, in the units of the field. Differentiable in ``mean`` and
        ``std``.
    """
    _check_same_shape("mean", mean, "target", target)
    _check_same_shape("std", std, "target", target)
    if bool((std < 0).any()):
        raise ValueError("std must be >= 0")
    positive = std > 0
    # double where: the zero-spread branch never divides by 0, so no NaN gradient either
    s = torch.where(positive, std, torch.ones_like(std))
    z = (target - mean) / s
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    crps = s * (z * (2.0 * torch.special.ndtr(z) - 1.0) + 2.0 * pdf - 1.0 / math.sqrt(math.pi))
    return torch.where(positive, crps, (target - mean).abs())


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
# sample statistics
# --------------------------------------------------------------------------------------------


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
_PROBABILISTIC_KEYS = ("rel_l2", "rmse", "crps", "crps_fair", "energy_score", "nll", "sharpness")
_LEVEL_KEYS = ("coverage", "width", "interval_score")


class ScoreAccumulator:
    """Streaming per-sample averages of the scores over many batches.

    Each ``update`` reduces its batch to per-field scores and adds their float64 sums (plus the
    quantile-curve shares and the PIT histogram counts), so memory stays bounded however large
    the test set is, and the result does not depend on how the data were split into batches.

    Probabilistic batches (``samples`` with ``S >= 2``) accumulate ``rel_l2`` and ``rmse`` of the
    point prediction (the sample mean unless ``mean`` is given), ``crps`` (V-statistic) and
    ``crps_fair`` (mean over points), ``energy_score`` (``fair=False``), ``nll`` (Gaussian with
    sample mean and unbiased std), ``sharpness`` (mean unbiased sample std) and, for each level
    ``L`` in ``levels``, ``coverage_{pct}``, ``width_{pct}`` and ``interval_score_{pct}`` with
    ``pct = round(100 L)``; ``compute`` adds ``ece``, the expected calibration error of the
    pooled quantile calibration curve, and ``curves`` returns the curves themselves.

    Deterministic batches (``update(None, target, mean=pred)``) accumulate only ``rel_l2``,
    ``rmse``, ``crps`` (= mean absolute error, the CRPS of a point forecast) and ``energy_score``
    (= RMS-norm distance); a model without uncertainty gets no NLL, coverage or width rather than
    a fake zero spread. Mixing both kinds in one accumulator raises ``ValueError``.

    Args:
        level: a central-interval level that must be reported (added to ``levels``), kept for
            callers that read ``coverage_90`` and ``width_90``.
        levels: central-interval levels in ``(0, 1)``; their ``pct`` names must be distinct.
        quantile_levels: levels ``tau`` of the quantile calibration curve.
        pit_bins: number of equal PIT histogram bins on ``[0, 1]``.
        seed: seed of the CPU generator that randomises the PIT, so results are reproducible
            (and, as its draws run in point order, independent of the batch split).
    """

    def __init__(
        self,
        level: float = 0.9,
        levels: Sequence[float] = LEVELS,
        quantile_levels: Sequence[float] = QUANTILE_LEVELS,
        pit_bins: int = 20,
        seed: int = 0,
    ) -> None:
        _check_level(level)
        self.level = level
        self.levels = tuple(sorted({*_check_levels(levels), float(level)}))
        pcts = [round(100 * lv) for lv in self.levels]
        if len(set(pcts)) != len(pcts):
            raise ValueError(
                f"levels {self.levels} give clashing key suffixes round(100 * level) = {pcts}"
            )
        self.quantile_levels = _check_levels(quantile_levels, "quantile_levels")
        if pit_bins < 1:
            raise ValueError(f"pit_bins must be at least 1, got {pit_bins}")
        self.pit_bins = pit_bins
        # level-major order, matching the (L, 3, B) stack in _update_probabilistic
        self._level_keys = tuple(f"{name}_{pct}" for pct in pcts for name in _LEVEL_KEYS)
        self._generator = torch.Generator().manual_seed(seed)
        self._mode: str | None = None
        self._sums: dict[str, float] = {}
        self._quantile_sums = torch.zeros(len(self.quantile_levels), dtype=torch.float64)
        self._pit_hist = torch.zeros(pit_bins, dtype=torch.int64)
        self._n = 0

    def _add(self, values: dict[str, Tensor]) -> None:
        # float64 sums so the batch split does not change the result beyond rounding; one stack
        # (and one device transfer) per batch rather than one per key
        rows = torch.stack([v.detach().to(torch.float64) for v in values.values()])
        for key, total in zip(values, rows.sum(dim=1).tolist(), strict=True):
            self._sums[key] = self._sums.get(key, 0.0) + total

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
        if mean is not None:
            _check_same_shape("mean", mean, "target", target)
        if samples is None:
            if mean is None:
                raise ValueError("a deterministic update needs mean=pred when samples is None")
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
        else:
            _check_samples(samples, target)
            if samples.shape[0] < 2:
                raise ValueError(
                    f"a probabilistic update needs S >= 2 samples, got shape "
                    f"{tuple(samples.shape)}; pass samples=None and mean=pred for a point forecast"
                )
            self._set_mode("probabilistic")
            self._update_probabilistic(samples, target, mean)
        self._n += target.shape[0]

    def _update_probabilistic(self, samples: Tensor, target: Tensor, mean: Tensor | None) -> None:
        n = samples.shape[0]
        sample_mean, sample_std = sample_stats(samples)
        # one sort serves the CRPS, every interval and the quantile curve
        sorted_samples = torch.sort(samples, dim=0).values
        abs_mean, half_pair_sum = _crps_terms(sorted_samples - target.unsqueeze(0))
        per_point = {
            "crps": _crps_from_terms(abs_mean, half_pair_sum, n, fair=False),
            "crps_fair": _crps_from_terms(abs_mean, half_pair_sum, n, fair=True),
            "nll": gaussian_nll(sample_mean, sample_std, target),
            "sharpness": sample_std,
        }
        point = sample_mean if mean is None else mean
        values = {
            "rel_l2": relative_l2(point, target),
            "rmse": rmse(point, target),
            "energy_score": energy_score(samples, target),
            **{key: v.flatten(1).mean(dim=1) for key, v in per_point.items()},
        }
        terms = _calibration_terms(sorted_samples, target, self.levels, self.quantile_levels)
        per_level = torch.stack([terms[name] for name in _LEVEL_KEYS], dim=1)  # (L, 3, B)
        values.update(zip(self._level_keys, per_level.flatten(0, 1), strict=True))
        self._add(values)
        self._quantile_sums += terms["quantile_shares"].to(torch.float64).sum(dim=1).cpu()
        pit_values = pit(sorted_samples, target, generator=self._generator)
        self._pit_hist += pit_histogram(pit_values, self.pit_bins).cpu()

    def _check_computable(self, method: str) -> None:
        if self._n == 0:
            raise ValueError(f"ScoreAccumulator.{method}() called before any update")

    def compute(self) -> dict[str, float]:
        """Averages over all fields seen, as Python floats, plus ``n`` (the number of fields).

        Returns:
            ``{key: mean score}`` for the keys of the accumulator's mode (for a probabilistic one
            including ``ece``), and ``"n"`` (an int).
        """
        self._check_computable("compute")
        if self._mode == "deterministic":
            return {**{key: self._sums[key] / self._n for key in _DETERMINISTIC_KEYS}, "n": self._n}
        out = {key: self._sums[key] / self._n for key in (*_PROBABILISTIC_KEYS, *self._level_keys)}
        shares = self._quantile_sums / self._n
        out["ece"] = float(calibration_error(shares, self.quantile_levels))
        out["n"] = self._n
        return out

    def curves(self) -> dict[str, list[float] | list[int]]:
        """Calibration curves of a probabilistic accumulator, as JSON-friendly lists.

        Returns:
            ``quantile_levels`` and ``quantile_shares`` (share of points with ``y <= q_tau``),
            ``interval_levels`` and ``interval_coverage`` (the central intervals' empirical
            coverage), ``pit_edges`` (``pit_bins + 1`` bin edges on ``[0, 1]``) and
            ``pit_hist`` (points per PIT bin, summing to the number of points seen).
        """
        self._check_computable("curves")
        if self._mode == "deterministic":
            raise ValueError(
                "a deterministic accumulator has no predictive distribution, hence no "
                "calibration curves or PIT histogram"
            )
        coverage_keys = self._level_keys[:: len(_LEVEL_KEYS)]
        return {
            "quantile_levels": list(self.quantile_levels),
            "quantile_shares": (self._quantile_sums / self._n).tolist(),
            "interval_levels": list(self.levels),
            "interval_coverage": [self._sums[key] / self._n for key in coverage_keys],
            "pit_edges": [k / self.pit_bins for k in range(self.pit_bins + 1)],
            "pit_hist": self._pit_hist.tolist(),
        }
