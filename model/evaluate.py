"""Scoring a trained operator on a test split, streaming over batches (bounded memory)."""

from __future__ import annotations

import torch
from torch import Tensor

from model.methods import Surrogate
from model.metrics import ScoreAccumulator


@torch.no_grad()
def score_model(model: Surrogate, x: Tensor, y: Tensor, n_samples: int, level: float = 0.9,
                batch_size: int = 16, seed: int = 0) -> dict[str, float]:
    """Scores of ``model`` on inputs ``x`` (N, C_in, H, W) against targets ``y`` (N, C_out, H, W).

    A probabilistic model is scored from ``n_samples`` draws per input (sample mean for the
    relative L2); a deterministic one from its point prediction, with no NLL or coverage.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    acc = ScoreAccumulator(level=level)
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if model.probabilistic:
            acc.update(model.sample(xb, n_samples, generator=gen), yb)
        else:
            acc.update(None, yb, mean=model(xb))
    return acc.compute()

