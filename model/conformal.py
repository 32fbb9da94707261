"""Split conformal calibration of predictive intervals (pure torch).

Any method's predictive mean ``m`` and spread ``s`` (the sample std of a probabilistic method, or
``s = 1`` for a deterministic one, whose band then comes from its calibration residuals alone)
turn into intervals ``m +- q s`` whose coverage holds in finite samples, with ``q`` read off the
held-out calibration split from the normalised nonconformity score ``|y - m| / s``.

Two guarantees, for calibration and test functions that are exchangeable:

- **per function** (as in conformal prediction for neural operators, e.g. Ma et al. 2024): the
  score of function ``i`` is the smallest ``lambda_i`` with at least a share ``point_rate`` of
  its points inside ``m +- lambda_i s``; with ``q`` the ``ceil((n + 1) level)``-th smallest of the
  ``n`` calibration scores, a new function has at least that share of points covered with
  probability in ``[level, level + 1 / (n + 1))``;
- **per point**: ``q`` is the conformal quantile of the pooled point scores of all calibration
  functions. The bound ``[level, level + 1 / (n J + 1))`` is exact when all points are exchangeable
  (independent noise); points of one field are dependent, so for fields it holds up to that
  dependence, and the test split's measured coverage is reported next to it.

Shapes: ``mean``, ``scale``, ``target`` are ``(N, *field)``; scores are ``(N, *field)`` per point
and ``(N,)`` per function.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

__all__ = [
    "ConformalCalibrator",
    "calibrate",
    "calibrated_coverage_curve",
    "conformal_quantile",
    "function_scores",
    "normalized_scores",
    "raw_coverage",
]


def _check(mean: Tensor, scale: Tensor, target: Tensor) -> None:
    if not mean.shape == scale.shape == target.shape or mean.dim() < 1:
        raise ValueError(f"mean {tuple(mean.shape)}, scale {tuple(scale.shape)} and target "
                         f"{tuple(target.shape)} must have one shape (N, *field)")
    if bool((scale < 0).any()):
        raise ValueError("scale must be >= 0")


def normalized_scores(mean: Tensor, scale: Tensor, target: Tensor) -> Tensor:
    """Nonconformity ``|y - m| / s`` per point, (N, *field). A zero spread gives 0 where the
    prediction is exact and ``inf`` elsewhere (never NaN)."""
    _check(mean, scale, target)
    err = (target - mean).abs()
    ratio = torch.where(scale > 0, err / torch.where(scale > 0, scale, 1.0), math.inf)
    return torch.where(err == 0, torch.zeros_like(err), ratio)


def function_scores(point_scores: Tensor, point_rate: float) -> Tensor:
    """Per function, the smallest scale that covers at least ``point_rate`` of its points: the
    ``ceil(point_rate J)``-th smallest of its J point scores. (N, *field) -> (N,)."""
    if not 0.0 < point_rate <= 1.0:
        raise ValueError(f"point_rate must be in (0, 1], got {point_rate}")
    flat = point_scores.flatten(1)
    k = max(1, math.ceil(point_rate * flat.shape[1] - 1e-9))
    return torch.kthvalue(flat, k, dim=1).values


def conformal_quantile(scores: Tensor, level: float) -> float:
    """The ``ceil((n + 1) level)``-th smallest of ``n`` scores (any shape, flattened): the split
    conformal threshold. ``inf`` when the calibration set is too small for ``level``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    flat = scores.flatten()
    n = flat.numel()
    if n == 0:
        raise ValueError("no calibration scores")
    k = math.ceil((n + 1) * level - 1e-9)
    if k > n:
        return math.inf
    return float(torch.kthvalue(flat.to(torch.float64), k).values)


@dataclass(frozen=True)
class ConformalCalibrator:
    """Scales fitted on the calibration split; ``m +- scale * s`` are the calibrated intervals."""

    level: float
    point_rate: float
    point_scale: float  # q of the pooled point scores
    function_scale: float  # q of the per-function scores
    n_functions: int
    n_points: int

    def to_dict(self) -> dict:
        return asdict(self)

    def interval(self, mean: Tensor, scale: Tensor, kind: str = "point") -> tuple[Tensor, Tensor]:
        """Calibrated ``(lower, upper)`` for ``kind`` "point" or "function"."""
        if kind not in ("point", "function"):
            raise ValueError(f"kind must be 'point' or 'function', got {kind!r}")
        q = self.point_scale if kind == "point" else self.function_scale
        return mean - q * scale, mean + q * scale

    def evaluate(self, mean: Tensor, scale: Tensor, target: Tensor) -> dict[str, float]:
        """Coverage of the calibrated intervals on another split: ``point_coverage`` (share of
        points inside ``m +- point_scale s``), its mean width, and ``function_coverage`` (share of
        functions with at least ``point_rate`` of their points inside ``m +- function_scale s``),
        with its mean width."""
        scores = normalized_scores(mean, scale, target)
        per_function = function_scores(scores, self.point_rate)
        return {
            "point_coverage": float((scores <= self.point_scale).double().mean()),
            "point_width": float((2 * self.point_scale * scale).double().mean()),
            "function_coverage": float((per_function <= self.function_scale).double().mean()),
            "function_width": float((2 * self.function_scale * scale).double().mean()),
        }


def calibrate(mean: Tensor, scale: Tensor, target: Tensor, level: float = 0.9,
              point_rate: float = 0.9) -> ConformalCalibrator:
    """Fit both conformal scales on a calibration split (N functions)."""
    scores = normalized_scores(mean, scale, target)
    return ConformalCalibrator(
        level=level, point_rate=point_rate,
        point_scale=conformal_quantile(scores, level),
        function_scale=conformal_quantile(function_scores(scores, point_rate), level),
        n_functions=int(scores.shape[0]), n_points=int(scores.numel()))


def raw_coverage(mean: Tensor, scale: Tensor, target: Tensor, z: float,
                 point_rate: float) -> dict[str, float]:
    """The same coverage measures for the uncalibrated band ``m +- z s`` (for "before")."""
    scores = normalized_scores(mean, scale, target)
    return {"point_coverage": float((scores <= z).double().mean()),
            "function_coverage": float((function_scores(scores, point_rate) <= z).double().mean())}


def calibrated_coverage_curve(calib_scores: Tensor, test_scores: Tensor,
                              levels: tuple[float, ...]) -> list[float]:
    """Per level, the test coverage of the band calibrated at that level on the calibration
    scores (the "after" reliability curve)."""
    flat = test_scores.flatten().to(torch.float64)
    return [float((flat <= conformal_quantile(calib_scores, lv)).double().mean())
            for lv in levels]
