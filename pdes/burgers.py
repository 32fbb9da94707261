"""1-D viscous Burgers ``u_t + (u^2 / 2)_x = nu u_xx``, periodic on [0, 1).

Method: Fourier pseudo-spectral in x with the 2/3 dealiasing rule, ETDRK4 in time (the viscous
term integrated exactly), all in :mod:`pdes.spectral`. Fields given on an output grid of R points
``x_j = j / R`` are taken as their trigonometric interpolant and solved on a finer internal grid
of ``N = solver_resolution`` points (a multiple of R); results are the solution's values at the
output grid points (up to the mean correction below). Everything is non-dimensional (unit
period, unit time, ``nu`` the inverse Reynolds number based on them); float64 throughout.

Automatic choices (documented rules; both assume ``max |u| <= U`` with ``U = 3`` unless the data
are larger: the default GRF gives ``max |u0|`` of about 1 to 2.5, and ``max |u|`` never grows for
viscous Burgers, by the maximum principle):

* Resolution. A viscous shock of half-jump ``A <= U`` is ``-A tanh(A x / (2 nu))``, whose Fourier
  coefficients decay like ``exp(-pi nu kappa / A)``. The default internal grid is
  ``N = R m`` with ``m >= 2`` the smallest FFT-friendly (5-smooth) integer giving at least
  ``8 U / (3 nu)`` points (= 8 / nu), which puts the 2/3-rule cutoff where that decay reaches
  ~3e-8; ``m >= 2`` keeps every mode of the input inside the dealiased band (N = R measured 1e-8
  worse at R = 64). For R = 256 this
  gives N = 512, 1024 and 8192 at nu = 0.1, 0.01, 0.001. A forced ``solver_resolution`` below
  ``4 U / (3 nu)`` (= 4 / nu; decay only ~1e-4 at the cutoff) is refused: at nu = 0.001,
  4096 points measured relative errors below 1e-6, 2048 points up to 4e-4.
* Time step. Viscosity damps every mode above ``kappa ~ U / nu`` within a step, so the
  advective stiffness that remains is ``U kappa dt ~ U^2 dt / nu``; the measured stability limit
  of ETDRK4 here is ``dt ~ 4-7 nu / U^2``. The default is ``dt = 1 / M`` with
  ``M = ceil(max(256, U^2 / (2 nu)))`` steps per unit time: about half the stability limit,
  and at most 1/256 for accuracy. For U = 3: dt = 1/256, 1/450 and 1/4500 at nu = 0.1, 0.01
  and 0.001; measured against dt/4 on GRF data (R = 256) the relative time error is below 3e-7
  at every frame of t in [0, 1] (largest early on, while the rough initial field smooths).

Sample mean. The scheme conserves the spatial mean exactly (the k = 0 mode never changes). Point
values on the output grid would average to it only up to the aliases of the modes |k| = R, 2R,
... (present when N > 3R): below 1e-16 for nu >= 0.01 at R >= 128, but ~4e-5 at nu = 0.001 and
R = 256, where shocks are sharper than the output grid. Outputs are therefore the point values
shifted by that (equally small) constant, so every frame averages to the conserved mean exactly.

The generator draws its random initial fields on a fixed 8192-point grid (FNO's) and subsamples
them, so for every output resolution dividing 8192 the inputs are the same fields, whatever
``nu`` or the internal grid.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pdes.grf import gaussian_random_field_1d
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
    "BURGERS_AMPLITUDE",
    "GRF_RESOLUTION",
    "burgers_default_dt",
    "burgers_resimulation_error",
    "burgers_solver_resolution",
    "generate_burgers",
    "solve_burgers",
]

# Velocity bound assumed by the automatic resolution and time step (see the module docstring).
BURGERS_AMPLITUDE = 3.0
# Grid on which the generator draws initial fields (FNO's), shared by all output grids.
GRF_RESOLUTION = 8192
# Fewest default steps per unit time, for accuracy when viscosity alone would allow fewer.
_MIN_STEPS_PER_UNIT_TIME = 256


def _minimum_resolution(nu: float, amplitude: float) -> int:
    """Fewest internal points that resolve a shock of half-jump ``amplitude`` (module docs)."""
    return int(np.ceil(4.0 * amplitude / (3.0 * nu)))


def burgers_solver_resolution(
    nu: float, resolution: int, amplitude: float = BURGERS_AMPLITUDE
) -> int:
    """Default internal grid size N for viscosity ``nu`` and output grid size ``resolution``.

    The smallest ``R m`` (``R = resolution``, ``m >= 2`` FFT-friendly) with at least
    ``8 amplitude / (3 nu)`` points; see :func:`pdes.spectral.refined_resolution` and the
    module docstring. ``amplitude``: bound on ``|u|``.
    """
    nu = check_positive(nu, "nu")
    amplitude = check_positive(amplitude, "amplitude")
    return refined_resolution(resolution, 8.0 * amplitude / (3.0 * nu))


def burgers_default_dt(nu: float, amplitude: float = BURGERS_AMPLITUDE) -> float:
    """Default ETDRK4 step ``1 / ceil(max(256, amplitude^2 / (2 nu)))`` (module docstring)."""
    nu = check_positive(nu, "nu")
    amplitude = check_positive(amplitude, "amplitude")
    # An integer number of steps per unit time puts common frame times on the step grid.
    steps = np.ceil(max(_MIN_STEPS_PER_UNIT_TIME, amplitude**2 / (2.0 * nu)))
    return float(1.0 / steps)


def _internal_resolution(nu: float, r: int, forced: int | None, amplitude: float) -> int:
    """The internal grid: the default, or a forced one checked against the resolution rule."""
    if forced is None:
        return burgers_solver_resolution(nu, r, amplitude)
    n = check_int(forced, "solver_resolution", r)
    if n % r != 0:
        raise ValueError(f"solver_resolution ({n}) must be a multiple of the grid size ({r})")
    need = _minimum_resolution(nu, amplitude)
    if n < need:
        raise ValueError(
            f"solver_resolution={n} cannot resolve the shock width ~2 nu / U = "
            f"{2 * nu / amplitude:.3g} for nu={nu}, U={amplitude:.3g}: need >= {need} points"
        )
    return n


def _solve(u0: np.ndarray, nu: float, times: np.ndarray, dt: float, n: int) -> np.ndarray:
    """Unchecked core: (m, R) initial values -> (m, T, R) on the output grid."""
    kappa = 2.0 * np.pi * rfft_wavenumbers(n)
    return solve_flux_form(u0, -nu * kappa**2, kappa, times, dt, n)


def solve_burgers(
    u0: np.ndarray,
    nu: float,
    times: np.ndarray,
    dt: float | None = None,
    solver_resolution: int | None = None,
) -> np.ndarray:
    """Solve ``u_t + (u^2 / 2)_x = nu u_xx`` on [0, 1) for a batch of initial conditions.

    ``u0``: (n, R) finite values at ``x_j = j / R`` (their trigonometric interpolant is the
    initial condition). ``nu``: viscosity > 0. ``times``: (T,) strictly increasing from 0.
    ``dt``: ETDRK4 step, default :func:`burgers_default_dt` with ``U = max(3, max |u0|)``.
    ``solver_resolution``: internal grid N, a multiple of R, default
    :func:`burgers_solver_resolution` with the same ``U``; a forced N too coarse for the shock
    width raises ValueError. Returns (n, T, R) float64: ``u(times[t], x_j)``.
    """
    u0 = check_batch(u0)
    nu = check_positive(nu, "nu")
    times = check_times(times)
    amplitude = max(BURGERS_AMPLITUDE, float(np.max(np.abs(u0))))
    n = _internal_resolution(nu, u0.shape[1], solver_resolution, amplitude)
    dt = burgers_default_dt(nu, amplitude) if dt is None else check_positive(dt, "dt")
    return _solve(u0, nu, times, dt, n)


def generate_burgers(
    n_samples: int,
    resolution: int,
    seed: int,
    *,
    nu: float = 0.1,
    t_final: float = 1.0,
    n_frames: int = 11,
    solver_resolution: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Generate FNO-style Burgers data: GRF initial conditions and their evolution.

    ``u0`` is drawn by :func:`pdes.grf.gaussian_random_field_1d` (``N(0, 625 (-Lap + 25)^-2)``)
    from ``np.random.default_rng(seed)`` on ``GRF_RESOLUTION`` = 8192 points (the smallest
    multiple of R at or above it when R does not divide 8192) and subsampled to R points, so the
    inputs are the same fields for every R dividing 8192 and any ``nu``; a dataset's first k
    samples are those of any larger one with the same seed. The trajectory starts from the
    subsampled values (their trigonometric interpolant), exactly as
    :func:`burgers_resimulation_error` re-runs them. Returns float64 arrays::

        inputs      (n, 1, R)           u0 at x_j = j / R
        targets     (n, 1, R)           u(t_final)
        trajectory  (n, n_frames, 1, R) u at times (frame 0 is u0, the last is the target)
        times       (n_frames,)         np.linspace(0, t_final, n_frames)
        grid        (1, R)              x_j = j / R

    The internal grid (unless forced) and the step are the module's rules for ``U = 3``,
    independent of the data. ``progress(m)`` is called after each chunk of ``m`` samples (the
    calls sum to ``n_samples``). Deterministic per seed.
    """
    check_int(n_samples, "n_samples", 1)
    r = check_int(resolution, "resolution", 2)
    check_int(seed, "seed", 0)
    nu = check_positive(nu, "nu")
    t_final = check_positive(t_final, "t_final")
    check_int(n_frames, "n_frames", 2)
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be callable or None, got {type(progress).__name__}")
    n = _internal_resolution(nu, r, solver_resolution, BURGERS_AMPLITUDE)
    dt = burgers_default_dt(nu)
    grf_n = r * int(np.ceil(GRF_RESOLUTION / r))
    rng = np.random.default_rng(seed)
    times = np.linspace(0.0, t_final, n_frames)
    # Chunks of samples bound memory and give progress. The generator's stream is consumed in
    # sample order, so chunking does not change any sample.
    rows = max(1, CHUNK_VALUES // max(n, grf_n))
    inputs, frames = [], []
    for start in range(0, n_samples, rows):
        m = min(rows, n_samples - start)
        inputs.append(gaussian_random_field_1d(rng, m, grf_n)[:, :: grf_n // r])
        frames.append(_solve(inputs[-1], nu, times, dt, n))
        if progress is not None:
            progress(m)
    trajectory = np.concatenate(frames, axis=0)[:, :, None, :]
    return {
        "inputs": np.concatenate(inputs, axis=0)[:, None, :],
        "targets": np.ascontiguousarray(trajectory[:, -1]),
        "trajectory": trajectory,
        "times": times,
        "grid": (np.arange(r, dtype=np.float64) / r)[None, :],
    }


def burgers_resimulation_error(
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    nu: float,
    t_final: float,
    solver_resolution: int | None = None,
) -> np.ndarray:
    """Physics residual of stored Burgers pairs: re-simulate and compare, shape (n,).

    ``inputs``, ``targets``: (n, 1, R) as from :func:`generate_burgers`. Each input is evolved
    to ``t_final`` with the generator's solver (same default grid and step, which do not depend
    on the data, so our own data come back to ~1e-15) and the relative L2 error against the
    target is returned. A sample with a non-finite input or target gives NaN; a finite one whose
    re-simulation blows up gives Inf. Pass the ``solver_resolution`` used for generation if it
    was forced. Only bad arguments or shapes raise.
    """
    nu = check_positive(nu, "nu")
    t_final = check_positive(t_final, "t_final")
    r = np.shape(inputs)[-1] if np.ndim(inputs) == 3 else 0
    if r < 2:
        raise ValueError(f"expected (n, 1, R) inputs with R >= 2, got shape {np.shape(inputs)}")
    n = _internal_resolution(nu, r, solver_resolution, BURGERS_AMPLITUDE)
    dt = burgers_default_dt(nu)
    times = np.array([0.0, t_final])
    return resimulation_error(inputs, targets, lambda u0: _solve(u0, nu, times, dt, n)[:, -1])
