"""Autoregressive rollouts of a one-step surrogate, with uncertainty propagated path by path.

A model trained on ``u(t) -> u(t + T)`` of an autonomous PDE is applied ``K`` times to reach
``u(K T)``. A probabilistic model propagates ``S`` sample paths: path ``s`` starts at the true
initial state and at every step gets a fresh draw from the predictive distribution *given its own
current state* (``sample(state_s, 1)``), so errors and spread compound along each path as they
would in use. A deterministic model has one path, its point prediction, and no spread.

Shapes: initial states ``x0`` (B, C, *spatial) with ``C_in == C_out``; truth ``(B, K, C,
*spatial)`` (frames 1..K of a trajectory); paths ``(K, S, B, C, *spatial)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.methods import Surrogate
from model.metrics import ScoreAccumulator


@torch.no_grad()
def rollout_paths(model: Surrogate, x0: Tensor, n_steps: int, n_paths: int,
                  generator: torch.Generator | None = None) -> Tensor:
    """``n_steps`` steps of ``n_paths`` sample paths (one path for a deterministic model):
    (B, C, *spatial) -> (K, S, B, C, *spatial)."""
    if n_steps < 1 or n_paths < 1:
        raise ValueError(f"n_steps and n_paths must be >= 1, got {n_steps}, {n_paths}")
    model.eval()
    if not model.probabilistic:
        steps, state = [], x0
        for _ in range(n_steps):
            state = model(state)
            if state.shape != x0.shape:
                raise ValueError(f"a rollout needs outputs shaped like inputs {tuple(x0.shape)}, "
                                 f"got {tuple(state.shape)}")
            steps.append(state)
        return torch.stack(steps).unsqueeze(1)
    states = [x0] * n_paths
    steps = []
    for _ in range(n_steps):
        states = [model.sample(s, 1, generator)[0] for s in states]
        if states[0].shape != x0.shape:
            raise ValueError(f"a rollout needs outputs shaped like inputs {tuple(x0.shape)}, "
                             f"got {tuple(states[0].shape)}")
        steps.append(torch.stack(states))
    return torch.stack(steps)


def relative_spread(paths_k: Tensor) -> Tensor:
    """RMS over the field of the paths' std, over the RMS of their mean: (S, B, ...) -> (B,).
    Needs no truth, so it is what a user watching a rollout can read."""
    std, mean = torch.std_mean(paths_k, dim=0, correction=1)
    return std.flatten(1).square().mean(1).sqrt() / mean.flatten(1).square().mean(1).sqrt()


@torch.no_grad()
def score_rollout(model: Surrogate, x0: Tensor, truth: Tensor, n_paths: int,
                  level: float = 0.9, spread_threshold: float = 0.1, batch_size: int = 8,
                  seed: int = 0) -> dict:
    """Per-step scores of a rollout from ``x0`` (N, C, *spatial) against ``truth`` (N, K, C,
    *spatial), streamed over batches of initial states.

    Returns ``steps``: one dict per step with ``step`` (1-based), the accumulator's scores
    (``rel_l2`` of the path mean, and for a probabilistic model ``crps``, coverage and width of
    the ``level`` interval, ...) and ``relative_spread`` (mean over inputs); and
    ``first_step_over_threshold``: the first step whose relative spread exceeds
    ``spread_threshold`` (None if none does, or for a deterministic model).
    """
    if truth.dim() != x0.dim() + 1 or truth.shape[0] != x0.shape[0] \
            or truth.shape[2:] != x0.shape[1:]:
        raise ValueError(f"truth must be (N, K, *x0.shape[1:]) for x0 {tuple(x0.shape)}, got "
                         f"{tuple(truth.shape)}")
    n_steps = truth.shape[1]
    gen = torch.Generator().manual_seed(seed)
    accs = [ScoreAccumulator(level=level) for _ in range(n_steps)]
    spread_sums = [0.0] * n_steps
    for i in range(0, x0.shape[0], batch_size):
        paths = rollout_paths(model, x0[i:i + batch_size], n_steps, n_paths, gen)
        for k in range(n_steps):
            target = truth[i:i + batch_size, k]
            if model.probabilistic:
                accs[k].update(paths[k], target)
                spread_sums[k] += float(relative_spread(paths[k]).double().sum())
            else:
                accs[k].update(None, target, mean=paths[k, 0])
    steps = []
    for k, acc in enumerate(accs):
        rec = {"step": k + 1, **acc.compute()}
        rec["relative_spread"] = spread_sums[k] / x0.shape[0] if model.probabilistic else None
        steps.append(rec)
    over = [s["step"] for s in steps
            if s["relative_spread"] is not None and s["relative_spread"] > spread_threshold]
    return {"steps": steps, "spread_threshold": spread_threshold, "n_paths": n_paths
            if model.probabilistic else 1,
            "first_step_over_threshold": over[0] if over else None}

