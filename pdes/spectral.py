"""Shared 1-D Fourier pseudo-spectral machinery: wavenumbers, dealiasing, ETDRK4 time stepping.

Conventions used by every solver built on this module (:mod:`pdes.burgers`, :mod:`pdes.ks`):

* A real periodic field on ``N`` equispaced points ``x_j = j L / N`` (``j = 0..N-1``) is held as
  its ``scipy.fft.rfft`` along the last axis: ``v_hat`` of shape ``(n, N // 2 + 1)``, complex,
  unnormalised (``v_hat[:, 0] = N * mean``). Batches of ``n`` samples are stepped together.
* The linear part is diagonal in Fourier space, given by its eigenvalues ``lin`` (one per
  rfft coefficient); the nonlinear part is a callable ``nonlinear(v_hat) -> N_hat`` of the
  same shape.
* Time stepping is ETDRK4 of Cox & Matthews (2002) with the contour-integral evaluation of
  Kassam & Trefethen (2005), "Fourth-order time-stepping for stiff PDEs", SIAM J. Sci. Comput.
  26(4). The marching driver :func:`march` steps with a fixed ``dt`` on the grid ``k * dt`` and
  reaches output times off that grid by one extra, shorter step that does not feed back into the
  march, so the state at a given time never depends on which other times were requested.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.fft as sfft

__all__ = [
    "FFT_WORKERS",
    "check_times",
    "dealias_mask",
    "etdrk4_coefficients",
    "etdrk4_step",
    "fourier_upsample",
    "march",
    "rfft_wavenumbers",
]

# Threads for batched FFTs; 2 matches the target machine and scipy splits work over rows.
FFT_WORKERS = 2

# A requested time within this fraction of dt of a grid point k*dt is taken as on the grid.
_GRID_TOL = 1e-9

Nonlinear = Callable[[np.ndarray], np.ndarray]


def _check_resolution(resolution: int, name: str = "resolution", minimum: int = 2) -> int:
    """Return ``resolution`` as int after checking it is an integer >= ``minimum``."""
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise ValueError(f"{name} must be an int, got {type(resolution).__name__}")
    if resolution < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {resolution}")
    return int(resolution)


def rfft_wavenumbers(resolution: int) -> np.ndarray:
    """Integer wavenumbers ``0, 1, ..., N // 2`` of ``rfft`` of length N, shape (N // 2 + 1,).

    Multiply by ``2 pi / L`` for angular wavenumbers on a period ``L``. For odd-order
    derivatives of even N, zero the last (Nyquist) entry: its mode cannot carry a derivative.
    """
    n = _check_resolution(resolution)
    return np.arange(n // 2 + 1, dtype=np.float64)


def dealias_mask(resolution: int) -> np.ndarray:
    """2/3-rule mask for rfft coefficients of length N, shape (N // 2 + 1,), float64 0/1.

    Keeps ``|k| < N / 3``: a product of two fields whose modes satisfy this has every alias
    (``k1 + k2 -/+ N``) outside the kept band (Orszag 1971), so masking a quadratic term after
    the pointwise product removes aliasing exactly.
    """
    n = _check_resolution(resolution)
    k = rfft_wavenumbers(n)
    return (3.0 * k < n).astype(np.float64)


def fourier_upsample(u: np.ndarray, resolution: int) -> np.ndarray:
    """Trigonometric interpolation of real periodic samples to a finer grid, in rfft form.

    ``u``: (n, R) samples at ``x_j = j L / R``. Returns ``v_hat`` (n, N // 2 + 1) complex, the
    rfft on ``N = resolution >= R`` points of the band-limited interpolant (the Nyquist mode of
    even R is split evenly between +-R/2, i.e. taken as a cosine, so ``irfft(v_hat, N)[:, ::N//R]``
    returns ``u`` to rounding).
    """
    u = np.asarray(u, dtype=np.float64)
    r = u.shape[-1]
    n = _check_resolution(resolution, "solver resolution", r)
    u_hat = sfft.rfft(u, axis=-1, workers=FFT_WORKERS)
    v_hat = np.zeros(u.shape[:-1] + (n // 2 + 1,), dtype=np.complex128)
    v_hat[..., : r // 2 + 1] = u_hat * (n / r)
    if r % 2 == 0 and n > r:
        # On the finer grid +R/2 and -R/2 are distinct modes; a real cosine needs half in each,
        # and the rfft half-spectrum slot R/2 stands for the pair.
        v_hat[..., r // 2] *= 0.5
    return v_hat


def etdrk4_coefficients(lin: np.ndarray, dt: float, n_contour: int = 32) -> dict[str, np.ndarray]:
    """ETDRK4 coefficients for the diagonal linear operator ``lin`` and step ``dt``.

    ``lin``: (K,) real or complex eigenvalues (units 1/time). Returns a dict of (K,) arrays
    ``E = exp(dt lin)``, ``E2 = exp(dt lin / 2)`` and ``Q, f1, f2, f3`` (units of time), the
    phi-function combinations of Kassam & Trefethen (2005, eq. 2.5 and 26). Those suffer
    cancellation for small ``|dt lin|``, so each is averaged over ``n_contour`` points of a unit
    circle around ``dt lin`` (Cauchy integral formula). For real ``lin`` only the upper half
    circle is used and the real part taken (the integrand is conjugate-symmetric), which is
    their published recipe; complex ``lin`` uses the full circle and keeps complex values.
    """
    lin = np.asarray(lin)
    if lin.ndim != 1 or lin.size == 0:
        raise ValueError(f"lin must be a non-empty 1-D array, got shape {lin.shape}")
    if not np.all(np.isfinite(lin)):
        raise ValueError("lin contains NaN or Inf")
    if not (isinstance(dt, float | int | np.floating | np.integer) and np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite number, got {dt!r}")
    if isinstance(n_contour, bool) or not isinstance(n_contour, int | np.integer) or n_contour < 4:
        raise ValueError(f"n_contour must be an int >= 4, got {n_contour!r}")
    real = not np.iscomplexobj(lin)
    lin_dt = float(dt) * lin.astype(np.complex128)
    half = 1.0 if real else 2.0
    roots = np.exp(1j * np.pi * half * (np.arange(1, n_contour + 1) - 0.5) / n_contour)
    lr = lin_dt[:, None] + roots[None, :]
    # exp overflows only for lr with Re > ~709, i.e. linear growth far beyond any usable dt.
    exp_lr = np.exp(lr)
    lr3 = lr**3

    def mean(values: np.ndarray) -> np.ndarray:
        m = float(dt) * values.mean(axis=1)
        return m.real if real else m

    coeffs = {
        "E": np.exp(lin_dt),
        "E2": np.exp(lin_dt / 2.0),
        "Q": mean((np.exp(lr / 2.0) - 1.0) / lr),
        "f1": mean((-4.0 - lr + exp_lr * (4.0 - 3.0 * lr + lr**2)) / lr3),
        "f2": mean((2.0 + lr + exp_lr * (-2.0 + lr)) / lr3),
        "f3": mean((-4.0 - 3.0 * lr - lr**2 + exp_lr * (4.0 - lr)) / lr3),
    }
    if real:
        coeffs["E"], coeffs["E2"] = coeffs["E"].real, coeffs["E2"].real
    return coeffs


def etdrk4_step(
    v_hat: np.ndarray, coeffs: dict[str, np.ndarray], nonlinear: Nonlinear
) -> np.ndarray:
    """One ETDRK4 step of ``v_t = lin v + N(v)`` (Cox & Matthews 2002, Kassam & Trefethen 2005).

    ``v_hat``: (n, K) complex state; ``coeffs`` from :func:`etdrk4_coefficients` (each (K,),
    broadcast over the batch); ``nonlinear(v_hat) -> N_hat`` of shape (n, K). Returns the new
    (n, K) state after ``dt``. Four nonlinear evaluations per step.
    """
    e2, q = coeffs["E2"], coeffs["Q"]
    n_v = nonlinear(v_hat)
    a = e2 * v_hat + q * n_v
    n_a = nonlinear(a)
    b = e2 * v_hat + q * n_a
    n_b = nonlinear(b)
    c = e2 * a + q * (2.0 * n_b - n_v)
    n_c = nonlinear(c)
    return (
        coeffs["E"] * v_hat
        + coeffs["f1"] * n_v
        + 2.0 * coeffs["f2"] * (n_a + n_b)
        + coeffs["f3"] * n_c
    )


def check_times(times: np.ndarray) -> np.ndarray:
    """Validate output times: 1-D, finite, starting at 0, strictly increasing. Returns float64."""
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0:
        raise ValueError(f"times must be a non-empty 1-D array, got shape {times.shape}")
    if not np.all(np.isfinite(times)):
        raise ValueError("times contains NaN or Inf")
    if times[0] != 0.0:
        raise ValueError(f"times must start at 0, got times[0] = {times[0]}")
    if np.any(np.diff(times) <= 0.0):
        raise ValueError("times must be strictly increasing")
    return times


def march(
    v_hat: np.ndarray,
    lin: np.ndarray,
    nonlinear: Nonlinear,
    times: np.ndarray,
    dt: float,
    output: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Integrate ``v_t = lin v + N(v)`` from t = 0 and return ``output(v_hat)`` at each time.

    ``v_hat``: (n, K) initial state; ``times``: (T,) increasing from 0 (see :func:`check_times`);
    ``output`` maps an (n, K) state to an (n, ...) array. Returns (n, T, ...). The march uses the
    fixed step ``dt`` on the grid ``k dt``; a time strictly between grid points is reached by one
    extra step of the remaining length from the preceding grid state, used for output only.
    Hence the state at a time depends only on (initial state, dt), not on the other requested
    times: re-running to a single final time reproduces a trajectory's last frame exactly.
    """
    times = check_times(times)
    ratio = times / dt
    k_out = np.floor(ratio + _GRID_TOL).astype(np.int64)  # last grid step at or before t
    rem = times - k_out * dt
    rem[np.abs(ratio - np.rint(ratio)) <= _GRID_TOL] = 0.0
    full = etdrk4_coefficients(lin, dt)
    frames: list[np.ndarray] = []
    step = 0
    for k_j, rem_j in zip(k_out, rem, strict=True):
        while step < k_j:
            v_hat = etdrk4_step(v_hat, full, nonlinear)
            step += 1
        if rem_j > 0.0:
            frames.append(output(etdrk4_step(v_hat, etdrk4_coefficients(lin, rem_j), nonlinear)))
        else:
            frames.append(output(v_hat))
    return np.stack(frames, axis=1)
