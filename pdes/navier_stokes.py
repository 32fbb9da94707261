"""2-D incompressible Navier-Stokes in vorticity form on the periodic unit torus [0, 1)^2.

Units: non-dimensional, lengths in box sizes; ``w`` and ``f / w`` are rates (1/time), ``nu``
is length^2/time and ``u`` length/time. Equations::

    w_t + u . grad w = nu Lap w + f,    u = (psi_y, -psi_x),    -Lap psi = w.

Discretisation (shared by the solver, the generator and the re-simulation check):

* ``resolution`` = R grid points per side, spacing ``1/R``; point ``(i, j)`` sits at
  ``(x, y) = (i/R, j/R)`` and arrays are indexed ``[..., i, j]`` (first grid axis x).
* Pseudo-spectral in space (``scipy.fft.rfft2`` over the two grid axes): derivatives are
  exact on the grid's Fourier modes; the nonlinear term is formed in physical space and
  de-aliased with the square 2/3 rule (modes with ``|k_x|`` or ``|k_y| > (2/3) (R // 2)``
  are zeroed), as in the reference solver of Li et al. (2020), "Fourier Neural Operator".
* Time: Crank-Nicolson for ``nu Lap w`` and Heun (explicit trapezoidal predictor-corrector)
  for ``-u . grad w + f``, exactly the FNO reference scheme. Globally second order in the
  step ``h``; two nonlinear evaluations per step.

The initial vorticity of the generated data is the FNO recipe: a periodic Gaussian random
field with ``alpha = 2.5``, ``tau = 7`` (:func:`pdes.grf.gaussian_random_field`), and the
default forcing is the FNO one, ``f = 0.1 (sin(2 pi (x + y)) + cos(2 pi (x + y)))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.fft as sfft

from pdes.grf import gaussian_random_field

__all__ = [
    "CFL_MAX",
    "generate_navier_stokes",
    "ns_forcing",
    "ns_grid",
    "ns_resimulation_error",
    "solve_navier_stokes",
]

# Largest accepted advective CFL number h * R * (max|u| + max|v|). Heun is not stable for
# pure advection (|amplification| = sqrt(1 + z^4 / 4) for z = h * |u| * k on the imaginary
# axis) and relies on viscosity to damp the growth, so the safe CFL shrinks with nu: at R = 64
# on FNO data, nu = 1e-4 diverged once the CFL reached ~1 and ran to t = 30 at 0.5, while
# nu = 1e-3 stayed accurate up to ~2. 0.5 covers nu >= 1e-4 with a small margin.
CFL_MAX = 0.5
# dt "divides" a frame interval when interval/dt is within this relative distance of an
# integer; the step is then dt itself, so runs with different frame sets agree bitwise.
_DIVIDES_RTOL = 1e-9
# Samples solved together. Measured at R = 64 on 2 cores: chunks of 1-32 cost the same per
# sample (~250 us per step; FFT-bound), 64 was ~1.7x slower (work arrays fall out of cache).
_CHUNK = 16
# FFT threads: workers=2 gave no measurable gain on the 2-core machine for these small
# batched transforms, so one thread; callers can run independent chunks in parallel.
_WORKERS = 1


class _Spectral(NamedTuple):
    """Fourier-space operators for one resolution, all on the rfft2 half grid (R, R//2 + 1)."""

    resolution: int
    k2: np.ndarray  # |k|^2 with k = 2 pi (integer wavenumber), 1/length^2
    to_fields: np.ndarray  # (4, 1, R, M) multipliers w_hat -> (u, v, w_x, w_y) hats
    dealias: np.ndarray  # (R, M) 0/1 mask of the 2/3 rule


def _check_resolution(resolution: object, name: str = "resolution") -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise ValueError(f"{name} must be an int, got {type(resolution).__name__}")
    if resolution < 4:
        raise ValueError(f"{name} must be >= 4, got {resolution}")
    return int(resolution)


def _spectral(resolution: int) -> _Spectral:
    """Wavenumbers, the velocity/gradient multipliers and the de-aliasing mask for size R."""
    kx_int = np.fft.fftfreq(resolution, d=1.0 / resolution)[:, None]
    ky_int = np.fft.rfftfreq(resolution, d=1.0 / resolution)[None, :]
    kx, ky = 2.0 * np.pi * kx_int, 2.0 * np.pi * ky_int
    k2 = kx**2 + ky**2
    # The Nyquist mode's derivative vanishes on the grid (sin(pi R x) = 0 at x = i/R), and
    # a nonzero imaginary Nyquist coefficient would break the real-field symmetry.
    nyquist = resolution / 2.0
    dkx = np.where(np.abs(kx_int) == nyquist, 0.0, kx)
    dky = np.where(np.abs(ky_int) == nyquist, 0.0, ky)
    inv_k2 = np.zeros_like(k2)
    inv_k2[k2 > 0] = 1.0 / k2[k2 > 0]  # psi is fixed up to a constant: take it mean-free
    # psi_hat = w_hat / |k|^2; u = psi_y and v = -psi_x; w_x and w_y for the gradient
    # (the "+ 0 * dky" terms only broadcast every multiplier to the (R, M) half grid).
    to_fields = np.stack(
        [1j * dky * inv_k2, -1j * dkx * inv_k2, 1j * dkx + 0 * dky, 1j * dky + 0 * dkx]
    )[:, None]
    cut = (2.0 / 3.0) * (resolution // 2)
    dealias = ((np.abs(kx_int) <= cut) & (np.abs(ky_int) <= cut)).astype(np.float64)
    return _Spectral(resolution, k2, to_fields, dealias)


def ns_grid(resolution: int) -> np.ndarray:
    """Grid coordinates, shape (2, R, R), float64: ``grid[0][i, j] = i/R``, ``grid[1] = j/R``.

    The torus is periodic, so the points are ``0, 1/R, ..., (R-1)/R`` (no duplicate at 1).
    """
    resolution = _check_resolution(resolution)
    x = np.arange(resolution, dtype=np.float64) / resolution
    return np.stack(np.meshgrid(x, x, indexing="ij"))


def ns_forcing(resolution: int) -> np.ndarray:
    """FNO forcing ``0.1 (sin(2 pi (x + y)) + cos(2 pi (x + y)))`` on the grid, shape (R, R).

    Units of vorticity per unit time. It lives on the single Fourier shell ``k = +-(1, 1)``,
    so a vorticity field proportional to it has a vanishing nonlinear term.
    """
    x, y = ns_grid(resolution)
    phase = 2.0 * np.pi * (x + y)
    return 0.1 * (np.sin(phase) + np.cos(phase))


def _nonlinear(w_hat: np.ndarray, ops: _Spectral, cfl: bool) -> tuple[np.ndarray, np.ndarray]:
    """``u . grad w`` in Fourier space, (n, R, M), not yet de-aliased; and the speed, (n,).

    The speed ``max|u| + max|v|`` on the grid (box lengths per unit time) bounds
    ``max(|u| + |v|)``; it is only computed when ``cfl`` is true (else zeros).
    """
    r = ops.resolution
    # One batched inverse transform for all four fields amortises the FFT set-up.
    u, v, w_x, w_y = sfft.irfft2(w_hat[None] * ops.to_fields, s=(r, r), workers=_WORKERS)
    advection = u * w_x
    advection += v * w_y
    speed = np.zeros(w_hat.shape[0])
    if cfl:  # max/min reductions avoid the |u| temporaries
        speed = np.fmax(u.max(axis=(-2, -1)), -u.min(axis=(-2, -1)))
        speed += np.fmax(v.max(axis=(-2, -1)), -v.min(axis=(-2, -1)))
    return sfft.rfft2(advection, workers=_WORKERS), speed


def _advance(
    w_hat: np.ndarray,
    n_steps: int,
    h: float,
    nu: float,
    f_hat: np.ndarray,
    ops: _Spectral,
) -> tuple[np.ndarray, np.ndarray]:
    """Take ``n_steps`` CN/Heun steps of size ``h``; return the new w_hat and the max CFL.

    ``w_hat``: (n, R, M) spectral vorticity. With ``a = h nu |k|^2`` each step is
    ``w* = [(1 - a/2) w + h (f - N(w))] / (1 + a/2)`` (Euler predictor, CN diffusion) and
    ``w+ = [(1 - a/2) w + h (f - (N(w) + N(w*)) / 2)] / (1 + a/2)`` (trapezoidal corrector).
    CFL per sample is ``h R (max|u| + max|v|)`` at the predictor stages (NaN for a sample
    that went non-finite).
    """
    half = 0.5 * h * nu * ops.k2
    decay = (1.0 - half) / (1.0 + half)  # CN amplification of each mode
    gain = h / (1.0 + half)  # CN weight of the explicit right-hand side
    forced = gain * f_hat  # forcing is constant in time: the same increment every stage
    # The 2/3 rule and the k = 0 mode of u . grad w = div(u w) (zero exactly; dropping its
    # rounding keeps mean(w) fixed) are folded into the weight, saving passes over the data.
    gain_n = gain * ops.dealias
    gain_n[0, 0] = 0.0
    cfl = np.zeros(w_hat.shape[0])
    for _ in range(n_steps):
        n_now, speed = _nonlinear(w_hat, ops, cfl=True)
        cfl = np.fmax(cfl, speed * (h * ops.resolution))
        base = decay * w_hat
        base += forced
        n_now *= gain_n
        n_pred, _ = _nonlinear(base - n_now, ops, cfl=False)
        n_pred *= gain_n
        n_now += n_pred
        n_now *= 0.5
        base -= n_now
        w_hat = base
    return w_hat, np.where(np.isfinite(w_hat).all(axis=(-2, -1)), cfl, np.nan)


def _check_positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a real number, got {type(value).__name__}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return float(value)


def _step_plan(times: np.ndarray, dt: float) -> list[tuple[int, float]]:
    """(number of steps, step size) for each interval between consecutive output times.

    Sub-steps are chosen so each requested time is hit exactly: ``ceil(interval / dt)`` equal
    steps of size ``interval / count <= dt``. When dt divides the interval (to 1e-9 relative)
    the step is dt itself, so e.g. one solve to ``t_final`` and a solve through the frames of
    ``linspace(0, t_final, n)`` take bitwise the same steps.
    """
    plan = []
    for interval in np.diff(times):
        ratio = interval / dt
        count = max(1, round(ratio))
        if abs(ratio - count) <= _DIVIDES_RTOL * ratio:
            plan.append((count, dt))
        else:
            count = int(np.ceil(ratio))
            plan.append((count, float(interval / count)))
    return plan


def _check_times(times: object) -> np.ndarray:
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or t.size < 1:
        raise ValueError(f"times must be a non-empty 1-D array, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("times contains NaN or Inf")
    if t[0] != 0.0:
        raise ValueError(f"times must start at 0, got times[0] = {t[0]}")
    if np.any(np.diff(t) <= 0.0):
        raise ValueError("times must be strictly increasing")
    return t


def _forcing_hat(forcing: np.ndarray | None, resolution: int) -> np.ndarray:
    """Validate the (R, R) forcing (None = FNO default) and return its rfft2, (R, M)."""
    f = ns_forcing(resolution) if forcing is None else np.asarray(forcing, dtype=np.float64)
    if f.shape != (resolution, resolution):
        raise ValueError(f"forcing must have shape {(resolution, resolution)}, got {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("forcing contains NaN or Inf")
    return sfft.rfft2(f)


def _integrate(
    w0: np.ndarray, nu: float, times: np.ndarray, dt: float, f_hat: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Unchecked core: trajectory (n, len(times), R, R) and max CFL per sample, (n,)."""
    n, r = w0.shape[0], w0.shape[-1]
    ops = _spectral(r)
    out = np.empty((n, times.size, r, r))
    out[:, 0] = w0
    w_hat = sfft.rfft2(w0, workers=_WORKERS)
    cfl = np.zeros(n)
    for frame, (n_steps, h) in enumerate(_step_plan(times, dt), start=1):
        w_hat, cfl_step = _advance(w_hat, n_steps, h, nu, f_hat, ops)
        cfl = np.maximum(cfl, cfl_step)  # NaN propagates: a diverged sample stays flagged
        out[:, frame] = sfft.irfft2(w_hat, s=(r, r), workers=_WORKERS)
    return out, cfl


def solve_navier_stokes(
    w0: np.ndarray,
    nu: float,
    times: np.ndarray,
    dt: float = 1e-3,
    forcing: np.ndarray | None = None,
) -> np.ndarray:
    """Evolve a batch of vorticity fields; return w at ``times``, shape (n, len(times), R, R).

    ``w0``: (n, R, R) initial vorticity (1/time), or one (R, R) field (then n = 1 is kept).
    ``nu``: kinematic viscosity (box length^2 / time), > 0. ``times``: 1-D, strictly
    increasing, starting at 0; frame 0 of the result is ``w0``. ``dt``: largest time step;
    each interval is split into equal sub-steps so the requested times are hit exactly (see
    :func:`_step_plan`). ``forcing``: (R, R) source of vorticity per unit time; None means
    :func:`ns_forcing`, pass zeros for the unforced problem.

    Raises ValueError for bad arguments, for a non-finite result, and when the advective CFL
    number ``h R (max|u| + max|v|)`` exceeds :data:`CFL_MAX` at any step (reduce dt).
    """
    w = np.asarray(w0, dtype=np.float64)
    if w.ndim == 2:
        w = w[None]
    if w.ndim != 3 or w.shape[1] != w.shape[2] or w.shape[0] < 1:
        raise ValueError(f"w0 must have shape (n, R, R) or (R, R), got {np.shape(w0)}")
    r = _check_resolution(w.shape[-1], "R (w0.shape[-1])")
    if not np.all(np.isfinite(w)):
        raise ValueError("w0 contains NaN or Inf")
    nu = _check_positive(nu, "nu")
    dt = _check_positive(dt, "dt")
    t = _check_times(times)
    f_hat = _forcing_hat(forcing, r)
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below
        out, cfl = _integrate(w, nu, t, dt, f_hat)
    bad = ~(cfl <= CFL_MAX)  # also catches NaN from a diverged sample
    if np.any(bad):
        worst = int(np.argmax(np.where(np.isnan(cfl), np.inf, cfl)))
        what = "diverged" if np.isnan(cfl[worst]) else f"reached CFL number {cfl[worst]:.3g}"
        raise ValueError(
            f"unstable time step: with dt={dt} sample {worst} {what} (limit CFL_MAX="
            f"{CFL_MAX}; {int(bad.sum())} of {bad.size} samples affected); reduce dt"
        )
    return out


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def generate_navier_stokes(
    n_samples: int,
    resolution: int,
    seed: int,
    *,
    nu: float = 1e-3,
    t_final: float = 10.0,
    n_frames: int = 11,
    dt: float = 1e-3,
    alpha: float = 2.5,
    tau: float = 7.0,
    solver_resolution: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Generate FNO-style forced Navier-Stokes data, float64, deterministic per seed.

    ``w(0)`` is ``gaussian_random_field(np.random.default_rng(seed), n_samples, S, alpha,
    tau)`` with ``S = solver_resolution`` (default: ``resolution``), evolved with the default
    forcing :func:`ns_forcing` and viscosity ``nu`` to the frames
    ``times = linspace(0, t_final, n_frames)``. When ``S > resolution`` (S must be a multiple
    of it) the solution is computed on the S grid and subsampled by striding, so stored
    values are the fine solution's values at ``(i/R, j/R)``; note that the GRF drawn at S
    differs from the one drawn at R for the same seed.

    Returns ``inputs`` (n, 1, R, R) = w(0), ``targets`` (n, 1, R, R) = w(t_final),
    ``trajectory`` (n, n_frames, 1, R, R), ``times`` (n_frames,) and ``grid`` (2, R, R)
    (:func:`ns_grid`). Samples are solved in chunks of up to 16; ``progress(k)`` is called
    after each chunk with ``k`` = the number of samples that chunk completed (increments,
    like :func:`pdes.darcy.generate_darcy`). Raises ValueError for bad arguments, when dt
    does not divide ``t_final / (n_frames - 1)`` (then :func:`ns_resimulation_error` could
    not reproduce the targets bitwise), or when dt is CFL-unstable.
    """
    n_samples = _check_count(n_samples, "n_samples", 1)
    resolution = _check_resolution(resolution)
    seed = _check_count(seed, "seed", 0)
    n_frames = _check_count(n_frames, "n_frames", 2)
    t_final = _check_positive(t_final, "t_final")
    dt = _check_positive(dt, "dt")
    s = resolution if solver_resolution is None else _check_resolution(solver_resolution)
    if s % resolution:
        raise ValueError(f"solver_resolution {s} must be a multiple of resolution {resolution}")
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be callable or None, got {type(progress).__name__}")
    ratio = t_final / (n_frames - 1) / dt
    if abs(ratio - round(ratio)) > _DIVIDES_RTOL * ratio:
        raise ValueError(
            f"dt={dt} must divide the frame spacing t_final/(n_frames-1) = "
            f"{t_final / (n_frames - 1)} so that re-simulation reproduces the data"
        )
    times = np.linspace(0.0, t_final, n_frames)
    rng = np.random.default_rng(seed)
    # One draw for all samples keeps the data independent of the chunk size.
    w0 = gaussian_random_field(rng, n_samples, s, alpha=alpha, tau=tau)
    forcing = ns_forcing(s)
    stride = s // resolution
    trajectory = np.empty((n_samples, n_frames, 1, resolution, resolution))
    for start in range(0, n_samples, _CHUNK):
        stop = min(start + _CHUNK, n_samples)
        frames = solve_navier_stokes(w0[start:stop], nu, times, dt=dt, forcing=forcing)
        trajectory[start:stop, :, 0] = frames[..., ::stride, ::stride]
        if progress is not None:
            progress(stop - start)
    return {
        "inputs": trajectory[:, 0].copy(),
        "targets": trajectory[:, -1].copy(),
        "trajectory": trajectory,
        "times": times,
        "grid": ns_grid(resolution),
    }


def ns_resimulation_error(
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    nu: float,
    t_final: float,
    dt: float,
    forcing: np.ndarray | None = None,
) -> np.ndarray:
    """Relative L2 error of re-simulating each input to ``t_final`` against its target, (n,).

    ``inputs``, ``targets``: (n, 1, R, R) vorticity (or (n, R, R)). Each input is evolved
    with :func:`solve_navier_stokes`'s scheme (same ``nu``, ``dt``, ``forcing``; None = the
    default forcing) and ``||w(t_final) - target|| / ||target||`` is returned per sample.
    Data made by :func:`generate_navier_stokes` at ``solver_resolution == resolution`` give
    ~1e-15 (the same steps are taken); with a finer solver grid the error also contains the
    coarse grid's discretisation error. Never raises for data values: a sample with a
    non-finite input or target gives NaN, one whose re-simulation diverges gives inf (no
    CFL check, so a corrupted, huge sample is reported rather than rejected), and a zero
    target gives inf (0 if the re-simulation is exactly zero too).
    """
    x = np.asarray(inputs, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"inputs and targets differ in shape: {x.shape} vs {y.shape}")
    if x.ndim == 4 and x.shape[1] == 1:
        x, y = x[:, 0], y[:, 0]
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"expected (n, 1, R, R) or (n, R, R) arrays, got {np.shape(inputs)}")
    r = _check_resolution(x.shape[-1], "R (inputs.shape[-1])")
    nu, t_final = _check_positive(nu, "nu"), _check_positive(t_final, "t_final")
    dt = _check_positive(dt, "dt")
    f_hat = _forcing_hat(forcing, r)
    valid = np.isfinite(x).all(axis=(1, 2)) & np.isfinite(y).all(axis=(1, 2))
    # Invalid samples are solved from zeros so they cannot emit warnings; masked below.
    x = np.where(valid[:, None, None], x, 0.0)
    times = np.array([0.0, t_final])
    sim = np.empty_like(x)
    with np.errstate(all="ignore"):  # a diverging corrupted sample is reported, not raised
        for start in range(0, x.shape[0], _CHUNK):
            chunk = slice(start, start + _CHUNK)
            sim[chunk] = _integrate(x[chunk], nu, times, dt, f_hat)[0][:, -1]
        diff = np.sqrt(np.sum((sim - y) ** 2, axis=(1, 2)))
        norm = np.sqrt(np.sum(np.where(valid[:, None, None], y, 0.0) ** 2, axis=(1, 2)))
        rel = np.where(diff == 0.0, 0.0, diff / norm)
    rel = np.where(np.isnan(rel), np.inf, rel)  # a diverged re-simulation: far from target
    return np.where(valid, rel, np.nan)
