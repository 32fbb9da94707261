"""1-D Kuramoto-Sivashinsky ``u_t = -u u_x - u_xx - u_xxxx``, periodic on [0, L).

Method: Fourier pseudo-spectral in x with the 2/3 dealiasing rule and ETDRK4 in time, the
stiff linear part ``q^2 - q^4`` (``q = 2 pi k / L``) integrated exactly, as in Kassam & Trefethen
(2005); shared code in :mod:`pdes.spectral`. Fields given on R output points ``x_j = j L / R``
are taken as their trigonometric interpolant and solved on ``N = solver_resolution`` points (a
multiple of R); results are the solution's values at the output points (up to the mean
correction below). Non-dimensional throughout (no parameter besides ``L``); float64.

Resolution rule. On the chaotic attractor the Fourier amplitudes fall like ``exp(-3.5 q)``
(measured for L = 32 pi and 100: ~1e-10 of the largest at q = 8). The default internal grid is
the smallest ``N = R m`` (``m >= 2`` FFT-friendly, see :func:`pdes.spectral.refined_resolution`)
whose 2/3-rule cutoff ``2 pi N / (3 L)`` is at least 8, i.e. ``N >= 12 L / pi``; with
dealiasing no aliasing error remains, only that truncation. A forced grid with cutoff below
q = 5 (amplitudes ~1e-6) is refused. For L = 32 pi or 100 and R = 128 this gives N = 384.

Time step. The default ``dt = 0.25`` is Kassam & Trefethen's; it is stable at these grids. On
the attractor the ETDRK4 error per unit time is ~1e-4 relative at dt = 0.25 (order ~3 there:
stiff order reduction; a clean order 4 on smooth short runs), below the chaotic growth of any
perturbation, so trajectories are faithful shadows rather than exact. Re-running with the same
dt and grid is deterministic, which is what :func:`ks_resimulation_error` relies on.

Sample mean. The spatial mean is conserved exactly by the scheme (the k = 0 mode never
changes). Point values on the output grid would average to it only up to the aliases of modes
|k| = R, 2R, ... (present when N > 3R, e.g. ~1e-5 for R = 64 at L = 32 pi); outputs are shifted by
that constant so that every frame averages to the conserved mean exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pdes.spectral import (
    CHUNK_VALUES,
    check_batch,
    check_int,
    check_positive,
    check_times,
    refined_resolution,
    resimulation_error,
    rfft_wavenumbers,
    solve_flux_form,
)

__all__ = [
    "KS_DEFAULT_LENGTH",
    "generate_ks",
    "ks_initial_condition",
    "ks_resimulation_error",
    "ks_solver_resolution",
    "solve_ks",
]

KS_DEFAULT_LENGTH = 32.0 * np.pi
# Dealiased cutoffs (in q) that the default and any forced internal grid must reach.
_Q_CUT_DEFAULT = 8.0
_Q_CUT_MIN = 5.0
# Pointwise standard deviation of the random initial condition before burn-in.
_IC_AMPLITUDE = 0.1


def ks_solver_resolution(length: float, resolution: int) -> int:
    """Default internal grid: the smallest ``R m >= 12 L / pi`` (dealiased cutoff q >= 8).

    ``m >= 2`` is FFT-friendly; see :func:`pdes.spectral.refined_resolution`.
    """
    length = check_positive(length, "length")
    return refined_resolution(resolution, 3.0 * _Q_CUT_DEFAULT * length / (2.0 * np.pi))


def _internal_resolution(length: float, r: int, forced: int | None) -> int:
    """The internal grid: the default, or a forced one checked against the cutoff rule."""
    if forced is None:
        return ks_solver_resolution(length, r)
    n = check_int(forced, "solver_resolution", r)
    if n % r != 0:
        raise ValueError(f"solver_resolution ({n}) must be a multiple of the grid size ({r})")
    q_cut = 2.0 * np.pi * n / (3.0 * length)
    if q_cut < _Q_CUT_MIN:
        need = int(np.ceil(3.0 * _Q_CUT_MIN * length / (2.0 * np.pi)))
        raise ValueError(
            f"solver_resolution={n} resolves wavenumbers only up to q = {q_cut:.2f} for "
            f"L = {length:.4g}; need q >= {_Q_CUT_MIN}, i.e. >= {need} points"
        )
    return n


def _solve(u0: np.ndarray, length: float, times: np.ndarray, dt: float, n: int) -> np.ndarray:
    """Unchecked core: (m, R) initial values -> (m, T, R) on the output grid."""
    q = 2.0 * np.pi * rfft_wavenumbers(n) / length
    return solve_flux_form(u0, q**2 - q**4, q, times, dt, n)


def solve_ks(
    u0: np.ndarray,
    length: float,
    times: np.ndarray,
    dt: float = 0.25,
    solver_resolution: int | None = None,
) -> np.ndarray:
    """Solve ``u_t = -u u_x - u_xx - u_xxxx`` on [0, length) for a batch of initial conditions.

    ``u0``: (n, R) finite values at ``x_j = j L / R`` (their trigonometric interpolant is the
    initial condition). ``length``: period L > 0. ``times``: (T,) strictly increasing from 0,
    any values (off the ``k dt`` grid they are reached by a shorter final step). ``dt``: ETDRK4
    step. ``solver_resolution``: internal grid N, a multiple of R, default
    :func:`ks_solver_resolution`; one too coarse raises ValueError. Returns (n, T, R) float64.
    """
    u0 = check_batch(u0)
    length = check_positive(length, "length")
    times = check_times(times)
    dt = check_positive(dt, "dt")
    n = _internal_resolution(length, u0.shape[1], solver_resolution)
    return _solve(u0, length, times, dt, n)


def ks_initial_condition(
    rng: np.random.Generator, n_samples: int, length: float, resolution: int
) -> np.ndarray:
    """Random smooth zero-mean start, (n_samples, resolution) at ``x_j = j L / resolution``.

    ``u0 = sum_{k=1}^{K} a_k cos(q_k x) + b_k sin(q_k x)`` over the linearly unstable band
    ``q_k = 2 pi k / L <= 1`` (``K = max(1, floor(L / (2 pi)))``), with ``a_k, b_k`` i.i.d.
    ``N(0, 0.1^2 / K)``: pointwise standard deviation 0.1. Drawn as one (n, K, 2) array from
    ``rng``, so the field does not depend on ``resolution``.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    n_samples = check_int(n_samples, "n_samples", 1)
    length = check_positive(length, "length")
    r = check_int(resolution, "resolution", 2)
    n_modes = max(1, int(np.floor(length / (2.0 * np.pi))))
    coeff = rng.standard_normal((n_samples, n_modes, 2)) * (_IC_AMPLITUDE / np.sqrt(n_modes))
    phase = 2.0 * np.pi * np.outer(np.arange(1, n_modes + 1), np.arange(r)) / r  # q_k x_j
    return coeff[..., 0] @ np.cos(phase) + coeff[..., 1] @ np.sin(phase)


def generate_ks(
    n_samples: int,
    resolution: int,
    seed: int,
    *,
    length: float = KS_DEFAULT_LENGTH,
    t_burn: float = 100.0,
    t_final: float = 20.0,
    n_frames: int = 21,
    dt: float = 0.25,
    solver_resolution: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Generate Kuramoto-Sivashinsky data on the chaotic attractor.

    Each sample starts from :func:`ks_initial_condition` (``np.random.default_rng(seed)``) on
    the internal grid, runs ``t_burn`` time units (discarded) to reach the attractor, and the
    state sampled at the R output points becomes the input. The trajectory is then solved from
    those values (their interpolant), exactly as :func:`ks_resimulation_error` re-runs them.
    Returns float64 arrays::

        inputs      (n, 1, R)           u at the end of burn-in
        targets     (n, 1, R)           u, t_final later
        trajectory  (n, n_frames, 1, R) u at times after burn-in (frame 0 = inputs)
        times       (n_frames,)         np.linspace(0, t_final, n_frames)
        grid        (1, R)              x_j = j L / R

    ``progress(m)`` is called after each chunk of ``m`` samples (the calls sum to
    ``n_samples``). Deterministic per seed; the first k samples are those of any larger dataset
    with the same seed and settings.
    """
    check_int(n_samples, "n_samples", 1)
    r = check_int(resolution, "resolution", 2)
    check_int(seed, "seed", 0)
    length = check_positive(length, "length")
    if t_burn != 0:  # 0 is allowed: no burn-in
        t_burn = check_positive(t_burn, "t_burn")
    t_final = check_positive(t_final, "t_final")
    check_int(n_frames, "n_frames", 2)
    dt = check_positive(dt, "dt")
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be callable or None, got {type(progress).__name__}")
    n = _internal_resolution(length, r, solver_resolution)
    rng = np.random.default_rng(seed)
    times = np.linspace(0.0, t_final, n_frames)
    rows = max(1, CHUNK_VALUES // n)
    inputs, frames = [], []
    for start in range(0, n_samples, rows):
        m = min(rows, n_samples - start)
        state = ks_initial_condition(rng, m, length, n)
        if t_burn > 0:
            state = _solve(state, length, np.array([0.0, t_burn]), dt, n)[:, -1]
        inputs.append(np.ascontiguousarray(state[:, :: n // r]))
        frames.append(_solve(inputs[-1], length, times, dt, n))
        if progress is not None:
            progress(m)
    trajectory = np.concatenate(frames, axis=0)[:, :, None, :]
    return {
        "inputs": np.concatenate(inputs, axis=0)[:, None, :],
        "targets": np.ascontiguousarray(trajectory[:, -1]),
        "trajectory": trajectory,
        "times": times,
        "grid": (np.arange(r, dtype=np.float64) * (length / r))[None, :],
    }


def ks_resimulation_error(
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    length: float,
    t_final: float,
    dt: float = 0.25,
    solver_resolution: int | None = None,
) -> np.ndarray:
    """Physics residual of stored KS pairs: re-simulate and compare, shape (n,).

    ``inputs``, ``targets``: (n, 1, R) as from :func:`generate_ks`. Each input is evolved
    ``t_final`` with the generator's solver (same ``dt`` and internal grid; pass the
    ``solver_resolution`` used if it was forced) and the relative L2 error against the target is
    returned. The flow is chaotic, so this check only suits data made by this very solver and
    settings: re-running them is deterministic (errors ~1e-15 for t_final ~ 20), while data from
    any other solver, step or grid would differ by O(1) after a few Lyapunov times even if
    correct. Non-finite input or target gives NaN; a finite sample whose re-simulation blows up
    gives Inf. Only bad arguments or shapes raise.
    """
    length = check_positive(length, "length")
    t_final = check_positive(t_final, "t_final")
    dt = check_positive(dt, "dt")
    r = np.shape(inputs)[-1] if np.ndim(inputs) == 3 else 0
    if r < 2:
        raise ValueError(f"expected (n, 1, R) inputs with R >= 2, got shape {np.shape(inputs)}")
    n = _internal_resolution(length, r, solver_resolution)
    times = np.array([0.0, t_final])
    return resimulation_error(
        inputs, targets, lambda u0: _solve(u0, length, times, dt, n)[:, -1]
    )
