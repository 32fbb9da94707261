"""Scoring a trained operator on a split, streaming over batches (bounded memory), and turning
its calibration-split predictions into conformal intervals for the test and current splits.

Memory: the S samples of a batch live only while that batch is scored; what is kept per split is
the predictive mean and spread of every field, (N, C_out, *spatial) each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from model.conformal import (
    calibrate,
    calibrated_coverage_curve,
    normalized_scores,
    raw_coverage,
)
from model.decomposition import decompose
from model.decomposition import summary as decomposition_summary
from model.methods import Surrogate
from model.metrics import ScoreAccumulator
from model.rollout import score_rollout

#: central-interval levels of the reliability diagram and of the coverage table
LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)


@dataclass
class SplitPrediction:
    """Scores of one split and the per-field moments that calibration needs."""

    scores: dict[str, float]
    curves: dict | None  # reliability and PIT curves (None for a deterministic model)
    mean: Tensor  # (N, C_out, *spatial): sample mean, or the point prediction
    scale: Tensor  # sample std; ones for a deterministic model (a residual band)
    target: Tensor


@torch.no_grad()
def predict_split(model: Surrogate, x: Tensor, y: Tensor, n_samples: int, level: float = 0.9,
                  batch_size: int = 16, seed: int = 0) -> SplitPrediction:
    """Scores of ``model`` on inputs ``x`` (N, C_in, *spatial) against targets ``y`` (N, C_out,
    *spatial). A probabilistic model is scored from ``n_samples`` draws per input (the sample
    mean for relative L2); a deterministic one from its point prediction, with no NLL, coverage
    or curves."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    levels = tuple(sorted({*LEVELS, level}))
    acc = ScoreAccumulator(level=level, levels=levels)
    means, scales = [], []
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if model.probabilistic:
            samples = model.sample(xb, n_samples, generator=gen)
            acc.update(samples, yb)
            std, mean = torch.std_mean(samples, dim=0, correction=1)
            means.append(mean)
            scales.append(std)
        else:
            pred = model(xb)
            acc.update(None, yb, mean=pred)
            means.append(pred)
            scales.append(torch.ones_like(pred))
    return SplitPrediction(acc.compute(), acc.curves() if model.probabilistic else None,
                           torch.cat(means), torch.cat(scales), y)


def score_model(model: Surrogate, x: Tensor, y: Tensor, n_samples: int, level: float = 0.9,
                batch_size: int = 16, seed: int = 0) -> dict[str, float]:
    """The scores of :func:`predict_split` alone."""
    return predict_split(model, x, y, n_samples, level, batch_size, seed).scores


def calibration_summary(calib: SplitPrediction, test: SplitPrediction,
                        current: SplitPrediction | None = None, level: float = 0.9,
                        point_rate: float = 0.9) -> dict:
    """Split conformal calibration on ``calib``, coverage before and after on ``test`` (and on
    ``current``, a possibly drifted batch, to show how coverage degrades).

    "Before" is the uncalibrated band ``m +- z s`` with ``z`` the Gaussian quantile of ``level``
    (and, for a probabilistic model, the sample-quantile interval's coverage from the scores).
    """
    cal = calibrate(calib.mean, calib.scale, calib.target, level, point_rate)
    z = float(torch.special.ndtri(torch.tensor(0.5 + level / 2, dtype=torch.float64)))
    pct = round(100 * level)

    def block(p: SplitPrediction) -> dict:
        before = raw_coverage(p.mean, p.scale, p.target, z, point_rate)
        if p.curves is not None:
            before["sample_interval_coverage"] = p.scores[f"coverage_{pct}"]
        return {"before": before, "after": cal.evaluate(p.mean, p.scale, p.target)}

    out = {"calibrator": cal.to_dict(), "z": z,
           "scale": "sample std" if test.curves is not None else "1 (absolute residuals)",
           "test": block(test),
           "curve": {"levels": list(LEVELS),
                     "after": calibrated_coverage_curve(
                         normalized_scores(calib.mean, calib.scale, calib.target),
                         normalized_scores(test.mean, test.scale, test.target), LEVELS)}}
    if test.curves is not None:
        out["curve"]["before"] = [test.scores[f"coverage_{round(100 * lv)}"] for lv in LEVELS]
    if current is not None:
        out["current"] = block(current)
    return out


@dataclass(frozen=True)
class EvalSettings:
    """What :func:`evaluate_method` does (mirrors ``pno.config.EvalConfig``)."""

    n_samples: int = 100
    level: float = 0.9
    batch_size: int = 4
    point_rate: float = 0.9
    decomposition_draws: int = 32
    rollout_paths: int = 32
    spread_threshold: float = 0.1
    plot_index: int = 0
    seed: int = 0


def _decomposition(model: Surrogate, x: Tensor, s: EvalSettings, i: int) -> dict:
    if model.posterior is None:
        return {"available": False,
                "why": f"{model.method!r} has no posterior over weights or members"}
    parts = decompose(model, x, s.decomposition_draws, s.batch_size, s.seed)
    return {"available": True, "over": model.posterior, "draws": parts["draws"],
            **decomposition_summary(parts),
            "maps": {k: parts[k][i, 0].sqrt() for k in ("aleatoric", "epistemic")}}


@torch.no_grad()
def evaluate_method(model: Surrogate, splits: dict[str, tuple[Tensor, Tensor]],
                    rollout: tuple[Tensor, Tensor] | None, s: EvalSettings) -> dict:
    """Everything the evaluation stage measures for one trained method.

    ``splits``: ``calib``, ``test`` and optionally ``current`` as (inputs, targets); ``rollout``:
    (initial states (N, C, *spatial), true frames (N, K, C, *spatial)) or None. Returns scores and
    curves of the test split, the current split's scores, the calibration summary, the variance
    decomposition (or why there is none), the rollout scores, and ``fields``: tensors of test
    sample ``plot_index`` for the pictures (dropped before the result is stored).
    """
    pred = {name: predict_split(model, x, y, s.n_samples, s.level, s.batch_size, s.seed)
            for name, (x, y) in splits.items()}
    test = pred["test"]
    calibration = calibration_summary(pred["calib"], test, pred.get("current"), s.level,
                                      s.point_rate)
    i = min(s.plot_index, test.mean.shape[0] - 1)
    q = calibration["calibrator"]["point_scale"]
    fields = {"input": splits["test"][0][i, 0], "truth": test.target[i, 0],
              "mean": test.mean[i, 0],
              "std": test.scale[i, 0] if model.probabilistic else None,
              "lower": test.mean[i, 0] - q * test.scale[i, 0],
              "upper": test.mean[i, 0] + q * test.scale[i, 0]}
    decomposition = _decomposition(model, splits["test"][0], s, i)
    fields["decomposition"] = decomposition.pop("maps", None)
    out = {"probabilistic": model.probabilistic, "scores": test.scores, "curves": test.curves,
           "calibration": calibration, "decomposition": decomposition, "fields": fields,
           "rollout": None}
    if "current" in pred:
        out["current_scores"] = pred["current"].scores
    if rollout is not None:
        out["rollout"] = score_rollout(model, rollout[0], rollout[1], s.rollout_paths, s.level,
                                       s.spread_threshold, s.batch_size, s.seed)
    return out
