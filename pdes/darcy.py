"""2-D Darcy flow ``-div(a grad u) = f`` on the unit square with ``u = 0`` on the boundary.

Discretisation (shared by the solver, the residual and every check built on them):

* ``resolution`` = N nodes per side *including* the boundary, spacing ``h = 1/(N-1)``;
  node ``(i, j)`` sits at ``(x_i, y_j) = (i h, j h)`` and arrays are indexed ``[i, j]``
  (first axis x).
* ``a`` is given at the nodes; the coefficient on the face between two neighbouring nodes is
  the arithmetic mean of their values (second-order accurate for smooth ``a``).
* 5-point finite differences on the ``(N-2)^2`` interior unknowns, numbered in C order of the
  interior block ``u[1:-1, 1:-1]``.

:func:`solve_darcy` solves one sample with ``scipy.sparse.linalg.spsolve`` (the reference);
:func:`generate_darcy` solves its batch with a nested-dissection direct solver whose
elimination plan is built once per resolution (:mod:`pdes.dissection`).

Units: the problem is non-dimensional (unit square, ``a`` a permeability ratio, ``f`` a unit
source), so ``u`` carries units of ``f / a`` times length squared.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from pdes.dissection import _interior_forcing, auto_workers, dissection
from pdes.grf import gaussian_random_field

__all__ = [
    "TORSION_MAX",
    "assemble_darcy",
    "darcy_coefficient",
    "darcy_residual",
    "generate_darcy",
    "solve_darcy",
]

# Maximum of the torsion function (-Laplace u = 1, u = 0 on the boundary) on the unit square,
# about 0.07367 (attained at the centre). For f = 1 the data must satisfy
# 0 <= u <= TORSION_MAX / min(a): the lower bound is the discrete maximum principle (the
# matrix is an M-matrix), the upper one is exact for constant a. For variable a it is a sharp
# empirical check, not a theorem: the rigorous 2-D bound (Talenti symmetrisation) is the
# looser 1 / (4 pi min(a)) ~= 0.0796 / min(a).
TORSION_MAX = 0.0737


def darcy_coefficient(field: np.ndarray, high: float = 12.0, low: float = 3.0) -> np.ndarray:
    """Threshold a field into a two-valued coefficient: ``where(field >= 0, high, low)``.

    ``field`` has any shape (typically (n, N, N) from :func:`gaussian_random_field`); the
    result has the same shape, float64, dimensionless permeability (FNO recipe: 12 and 3).
    """
    if not (np.isfinite(high) and np.isfinite(low) and high > 0 and low > 0):
        raise ValueError(f"high and low must be positive and finite, got high={high}, low={low}")
    field = np.asarray(field, dtype=np.float64)
    return np.where(field >= 0.0, float(high), float(low))


def _check_coefficient(a: np.ndarray) -> np.ndarray:
    """Validate one nodal coefficient: (N, N), N >= 3, finite and strictly positive."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"coefficient must be a square (N, N) array, got shape {a.shape}")
    if a.shape[0] < 3:
        raise ValueError(f"need N >= 3 nodes per side for an interior unknown, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("coefficient contains NaN or Inf")
    if np.min(a) <= 0.0:
        raise ValueError(f"coefficient must be strictly positive, min is {np.min(a)}")
    return a


def assemble_darcy(a: np.ndarray) -> sp.csr_matrix:
    """Assemble the 5-point matrix of ``-div(a grad .)`` for one (N, N) nodal coefficient.

    Returns a symmetric positive definite ``scipy.sparse.csr_matrix`` of shape
    ((N-2)^2, (N-2)^2) acting on interior unknowns in C order; entries carry the ``1/h^2``.
    Boundary values are zero, so their couplings are simply dropped.
    """
    a = _check_coefficient(a)
    n_nodes = a.shape[0]
    m = n_nodes - 2
    inv_h2 = float((n_nodes - 1) ** 2)
    face_x = 0.5 * (a[1:, :] + a[:-1, :])  # (N-1, N): face x_{i+1/2} at y_j
    face_y = 0.5 * (a[:, 1:] + a[:, :-1])  # (N, N-1): face y_{j+1/2} at x_i
    east, west = face_x[1:, 1:-1], face_x[:-1, 1:-1]  # (N-2, N-2) around interior nodes
    north, south = face_y[1:-1, 1:], face_y[1:-1, :-1]
    idx = np.arange(m * m).reshape(m, m)
    diag = (east + west + north + south) * inv_h2
    # Interior-interior couplings; each appears twice (symmetric) with the shared face value.
    off_x = -east[:-1, :] * inv_h2
    off_y = -north[:, :-1] * inv_h2
    # (row block, column block, value block): the diagonal, then each coupling both ways.
    blocks = [
        (idx, idx, diag),
        (idx[:-1, :], idx[1:, :], off_x),
        (idx[1:, :], idx[:-1, :], off_x),
        (idx[:, :-1], idx[:, 1:], off_y),
        (idx[:, 1:], idx[:, :-1], off_y),
    ]
    rows = np.concatenate([r.ravel() for r, _, _ in blocks])
    cols = np.concatenate([c.ravel() for _, c, _ in blocks])
    vals = np.concatenate([v.ravel() for _, _, v in blocks])
    return sp.csr_matrix((vals, (rows, cols)), shape=(m * m, m * m))


def solve_darcy(a: np.ndarray, f: float | np.ndarray = 1.0) -> np.ndarray:
    """Solve ``-div(a grad u) = f``, ``u = 0`` on the boundary, for one sample.

    ``a``: (N, N) nodal coefficient, strictly positive. ``f``: scalar or (N, N) nodal source
    (only interior values are used). Returns ``u`` of shape (N, N), float64, zero boundary.
    Uses a sparse direct solve (``scipy.sparse.linalg.spsolve``).
    """
    a = _check_coefficient(a)
    rhs = _interior_forcing(f, a.shape)
    if not np.all(np.isfinite(rhs)):
        raise ValueError("forcing contains NaN or Inf on the interior")
    u = np.zeros_like(a)
    u[1:-1, 1:-1] = spsolve(assemble_darcy(a), rhs.ravel()).reshape(rhs.shape)
    return u


def darcy_residual(a: np.ndarray, u: np.ndarray, f: float | np.ndarray = 1.0) -> np.ndarray | float:
    """Relative discrete residual ``||(-div a grad u)_h - f||_2 / ||f||_2`` per sample.

    ``a``, ``u``: (n, N, N) batches (or a single (N, N) pair), same shape. ``f``: scalar,
    (N, N) or (n, N, N) nodal source. Norms run over interior nodes; the stencil uses ``u`` on
    the boundary as given (boundary violations are not counted here). Returns shape (n,), or
    a float for a single pair. NaN/Inf in the inputs propagate to the output; nothing raises
    for non-finite values.
    """
    a = np.asarray(a, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    if a.shape != u.shape:
        raise ValueError(f"a and u must have the same shape, got {a.shape} and {u.shape}")
    single = a.ndim == 2
    if single:
        a, u = a[None], u[None]
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] < 3:
        raise ValueError(f"expected (n, N, N) or (N, N) arrays with N >= 3, got {a.shape}")
    rhs = _interior_forcing(f, a.shape)
    f_norm = np.sqrt(np.sum(rhs**2, axis=(1, 2)))
    if np.any(f_norm == 0.0):
        raise ValueError("forcing is zero on the interior; the relative residual is undefined")
    inv_h2 = float((a.shape[1] - 1) ** 2)
    # Non-finite inputs are meant to come out as NaN/Inf, so their warnings are noise.
    with np.errstate(invalid="ignore", over="ignore"):
        flux_x = 0.5 * (a[:, 1:, :] + a[:, :-1, :]) * (u[:, 1:, :] - u[:, :-1, :])
        flux_y = 0.5 * (a[:, :, 1:] + a[:, :, :-1]) * (u[:, :, 1:] - u[:, :, :-1])
        div_x = flux_x[:, 1:, 1:-1] - flux_x[:, :-1, 1:-1]  # (n, N-2, N-2), times 1/h^2 below
        div_y = flux_y[:, 1:-1, 1:] - flux_y[:, 1:-1, :-1]
        res = -(div_x + div_y) * inv_h2 - rhs
        rel = np.sqrt(np.sum(res**2, axis=(1, 2))) / f_norm
    return float(rel[0]) if single else rel


def generate_darcy(
    n_samples: int,
    resolution: int,
    seed: int,
    alpha: float = 2.0,
    tau: float = 3.0,
    high: float = 12.0,
    low: float = 3.0,
    forcing: float = 1.0,
    progress: Callable[[int], None] | None = None,
    method: str = "dissection",
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate FNO-style Darcy pairs ``(a, u)``, each (n_samples, N, N) float64.

    ``a = darcy_coefficient(GRF(alpha, tau), high, low)`` drawn from
    ``np.random.default_rng(seed)``; ``u`` solves ``-div(a grad u) = forcing`` with zero
    boundary. ``progress(1)`` is called after each solved sample. Deterministic per seed.

    ``method``: ``"dissection"`` (default) solves with the batched nested-dissection direct
    solver (one elimination plan per resolution, reused by every sample); ``"spsolve"`` calls
    :func:`solve_darcy` (``scipy.sparse.linalg.spsolve``) per sample, the reference. Both are
    exact direct solves; they agree to round-off (max-norm relative difference ~1e-13).
    ``workers`` (dissection only): processes to spread the samples over; ``None`` uses the
    usable cores (at most 4) for batches of at least 32 samples on Linux (forked workers,
    which solve while this process draws the fields), 1 keeps everything in this process. The
    output does not depend on ``method`` beyond round-off, nor on ``workers`` at all.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer):
        raise ValueError(f"n_samples must be an int, got {type(n_samples).__name__}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise ValueError(f"resolution must be an int, got {type(resolution).__name__}")
    if resolution < 3:
        raise ValueError(f"resolution must be >= 3 (one interior node), got {resolution}")
    if not np.isfinite(forcing):
        raise ValueError(f"forcing must be finite, got {forcing}")
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be callable or None, got {type(progress).__name__}")
    if method not in ("dissection", "spsolve"):
        raise ValueError(f"method must be 'dissection' or 'spsolve', got {method!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers must be a positive int or None, got {workers!r}")
    rng = np.random.default_rng(seed)

    def draw(count: int) -> np.ndarray:
        # Successive draws continue one random stream: drawing in chunks gives the same fields.
        field = gaussian_random_field(rng, count, resolution, alpha=alpha, tau=tau)
        return darcy_coefficient(field, high=high, low=low)

    if method == "dissection":
        workers = auto_workers(n_samples) if workers is None else workers
        return dissection(n_samples, draw, forcing, progress, workers)
    a = draw(n_samples)
    u = np.empty_like(a)
    for k in range(n_samples):
        u[k] = solve_darcy(a[k], forcing)
        if progress is not None:
            progress(1)
    return a, u
