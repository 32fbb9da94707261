"""Per-sample summary features of Darcy data, for data-quality and drift checks.

Every feature is one number per sample, in sample order. Non-finite values are *not* hidden:
plain ``np.min``/``np.max``/``np.mean`` are used (never the nan-aware variants), so a NaN or
Inf anywhere in a sample shows up as NaN/Inf in that sample's features and nothing raises.
"""

from __future__ import annotations

import numpy as np

from pdes.darcy import TORSION_MAX, darcy_residual
from pdes.dataset import Dataset
from pdes.registry import get_spec, input_hashes

__all__ = ["FEATURE_COLUMNS", "darcy_features", "evolution_features", "sample_features"]

FEATURE_COLUMNS: tuple[str, ...] = (
    "n_x",
    "n_y",
    "nonfinite",
    "a_min",
    "a_max",
    "a_mean",
    "a_high_fraction",
    "u_min",
    "u_max",
    "u_mean",
    "u_rms",
    "boundary_abs_max",
    "residual",
    "bound_ratio",
)


def _as_batch(name: str, arr: np.ndarray) -> np.ndarray:
    """Return a float64 (n, N, N) view, squeezing a singleton channel axis (n, 1, N, N)."""
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[1] < 3:
        raise ValueError(
            f"{name} must have shape (n, N, N) or (n, 1, N, N), N >= 3; got {arr.shape}"
        )
    if arr.shape[0] < 1:
        raise ValueError(f"{name} holds no samples, got shape {arr.shape}")
    return arr


def darcy_features(
    a: np.ndarray,
    u: np.ndarray,
    forcing: float = 1.0,
    low: float = 3.0,
    high: float = 12.0,
) -> dict[str, np.ndarray]:
    """Compute :data:`FEATURE_COLUMNS` for a batch of Darcy pairs.

    ``a``, ``u``: (n, N, N) or (n, 1, N, N), nodal coefficient and solution on the grid of
    :mod:`pdes.darcy`. ``forcing``: the constant source ``f > 0`` the data were made with;
    ``low``/``high``: the two coefficient values (``a_high_fraction`` counts nodes with
    ``a > (low + high)/2``, and is NaN for a sample whose ``a`` is not all finite).
    Returns a dict of 1-D arrays of length n: ``n_x``, ``n_y``, ``nonfinite`` (count of NaN/Inf
    values in a and u) int64, the rest float64.
    ``bound_ratio = u_max * a_min / (forcing * TORSION_MAX)`` must be <= 1 for valid data.
    """
    a = _as_batch("a", a)
    u = _as_batch("u", u)
    if a.shape != u.shape:
        raise ValueError(f"a and u must have the same shape, got {a.shape} and {u.shape}")
    if not (np.isfinite(forcing) and forcing > 0):
        raise ValueError(f"forcing must be a positive finite number, got {forcing}")
    n, n_x, n_y = a.shape
    axes = (1, 2)
    boundary = np.concatenate([u[:, 0, :], u[:, -1, :], u[:, :, 0], u[:, :, -1]], axis=1)
    # Non-finite data must flow through to NaN/Inf features; silence the arithmetic warnings.
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        a_min = np.min(a, axis=axes)
        u_max = np.max(u, axis=axes)
        high_fraction = np.mean(a > 0.5 * (low + high), axis=axes)
        # A comparison with NaN is just False, so mark such samples explicitly.
        high_fraction = np.where(np.all(np.isfinite(a), axis=axes), high_fraction, np.nan)
        features = {
            "n_x": np.full(n, n_x, dtype=np.int64),
            "n_y": np.full(n, n_y, dtype=np.int64),
            "nonfinite": np.sum(~np.isfinite(a), axis=axes) + np.sum(~np.isfinite(u), axis=axes),
            "a_min": a_min,
            "a_max": np.max(a, axis=axes),
            "a_mean": np.mean(a, axis=axes),
            "a_high_fraction": high_fraction,
            "u_min": np.min(u, axis=axes),
            "u_max": u_max,
            "u_mean": np.mean(u, axis=axes),
            "u_rms": np.sqrt(np.mean(u**2, axis=axes)),
            "boundary_abs_max": np.max(np.abs(boundary), axis=1),
            "residual": np.asarray(darcy_residual(a, u, forcing), dtype=np.float64),
            "bound_ratio": u_max * a_min / (forcing * TORSION_MAX),
        }
    return {name: features[name] for name in FEATURE_COLUMNS}


def evolution_features(inputs: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample features of time-dependent data, input state -> target state.

    ``inputs``, ``targets``: (n, c, *spatial). Columns ``n_x`` (and ``n_y`` in 2D), ``nonfinite``,
    ``in_*``/``out_*`` min, max, mean and RMS, and ``mean_drift`` = |mean(out) - mean(in)|, the
    change of the spatial mean, conserved by Burgers and KS and zero for 2D vorticity.
    """
    if inputs.shape[0] != targets.shape[0] or inputs.ndim < 3:
        raise ValueError(f"inputs (n, c, *spatial) and targets must share n, got {inputs.shape} "
                         f"and {targets.shape}")
    n, spatial = inputs.shape[0], targets.shape[2:]
    axes = tuple(range(1, inputs.ndim))
    out: dict[str, np.ndarray] = {"n_x": np.full(n, spatial[0], dtype=np.int64)}
    if len(spatial) > 1:
        out["n_y"] = np.full(n, spatial[1], dtype=np.int64)
    with np.errstate(invalid="ignore", over="ignore"):
        out["nonfinite"] = (np.sum(~np.isfinite(inputs), axis=axes)
                            + np.sum(~np.isfinite(targets), axis=axes))
        for prefix, arr in (("in", inputs), ("out", targets)):
            out[f"{prefix}_min"] = np.min(arr, axis=axes)
            out[f"{prefix}_max"] = np.max(arr, axis=axes)
            out[f"{prefix}_mean"] = np.mean(arr, axis=axes)
            out[f"{prefix}_rms"] = np.sqrt(np.mean(arr**2, axis=axes))
        out["mean_drift"] = np.abs(out["out_mean"] - out["in_mean"])
    return out


def sample_features(ds: Dataset, resimulate: bool = True) -> dict[str, np.ndarray]:
    """The feature table of any registered PDE's dataset, one row per sample.

    Adds to the PDE's own columns: ``input_hash`` (leakage checks across splits), one column per
    PDE parameter (from the file's per-sample parameters, else its config) and, for
    time-dependent PDEs with ``resimulate``, ``resim_error``: the relative L2 distance between
    the stored target and a re-simulation of the stored input with the stored parameters.
    """
    spec = get_spec(ds.pde)
    params = {k: np.asarray(ds.parameters.get(k, np.full(ds.n_samples, ds.config.get(k, np.nan))),
                            dtype=np.float64) for k in spec.defaults}
    if spec.name == "darcy":
        cfg = {k: float(params[k][0]) for k in ("forcing", "low", "high")}
        feats = darcy_features(ds.inputs, ds.targets, **cfg)
    else:
        feats = evolution_features(ds.inputs, ds.targets)
        if resimulate and spec.resimulate is not None:
            scalar = {k: float(v[0]) for k, v in params.items()}
            feats["resim_error"] = spec.resimulate(ds.inputs, ds.targets, **scalar)
    feats.update({f"param_{k}": v for k, v in params.items()})
    feats["input_hash"] = input_hashes(ds.inputs)
    return feats
