"""Validated inference for a trained operator: the entry point a service or load test calls.

Inputs are checked before they reach the network; a bad request raises :class:`InvalidInputError`
(a ``ValueError``) that says what was wrong. Valid requests are answered with the predictive mean
and, for probabilistic models, the predictive standard deviation from ``n_samples`` draws.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from model.methods import Surrogate


class InvalidInputError(ValueError):
    """A request that cannot be served as sent (shape, dtype or non-finite values)."""


class Predictor:
    """Thread-safe wrapper: ``predict`` may be called from several threads at once (no state is
    mutated; sampling uses a per-call generator)."""

    def __init__(self, model: Surrogate, resolution: tuple[int, ...], n_samples: int = 32,
                 max_batch: int = 256) -> None:
        self.model = model.eval()
        self.resolution = tuple(resolution)
        self.n_samples = n_samples
        self.max_batch = max_batch

    def validate(self, x: object) -> Tensor:
        """Return ``x`` as a float32 tensor (B, C_in, *resolution) or raise InvalidInputError."""
        if isinstance(x, Tensor):
            arr = x.detach().cpu().numpy()
        elif isinstance(x, np.ndarray):
            arr = x
        else:
            raise InvalidInputError(f"input must be a numpy array or torch tensor, "
                                    f"got {type(x).__name__}")
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise InvalidInputError(f"input must be real numeric, got dtype {arr.dtype}")
        want = (self.model.in_channels, *self.resolution)
        if arr.ndim == len(want):  # one sample without the batch axis
            arr = arr[None]
        if arr.ndim != len(want) + 1 or tuple(arr.shape[1:]) != want:
            raise InvalidInputError(f"input shape must be (B, {', '.join(map(str, want))}) or "
                                    f"({', '.join(map(str, want))}), got {tuple(arr.shape)}")
        if not 1 <= arr.shape[0] <= self.max_batch:
            raise InvalidInputError(f"batch size must be in [1, {self.max_batch}], "
                                    f"got {arr.shape[0]}")
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InvalidInputError(f"input has {int(bad.sum())} non-finite values (NaN or Inf), "
                                    f"first at index {first}")
        return torch.as_tensor(np.ascontiguousarray(arr), dtype=torch.float32)

    @torch.no_grad()
    def predict(self, x: object, seed: int = 0) -> dict[str, np.ndarray]:
        """Mean (B, C_out, H, W) and, for probabilistic models, std of the predictive samples."""
        xt = self.validate(x)
        if not self.model.probabilistic:
            return {"mean": self.model(xt).numpy()}
        gen = torch.Generator().manual_seed(seed)
        samples = self.model.sample(xt, self.n_samples, generator=gen)
        return {"mean": samples.mean(0).numpy(), "std": samples.std(0).numpy()}
