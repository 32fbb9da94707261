"""Periodic Gaussian random fields on a uniform grid (the FNO input-field recipe).

The field has covariance ``sigma^2 (-Laplacian + tau^2)^(-alpha)`` on the periodic unit
square, with the constant (zero) Fourier mode removed, exactly as in ``GaussianRF`` from the
utilities of Li et al. (2020), "Fourier Neural Operator for Parametric PDEs". The field is
dimensionless.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gaussian_random_field", "grf_sqrt_eigenvalues"]


def grf_sqrt_eigenvalues(resolution: int, alpha: float = 2.0, tau: float = 3.0) -> np.ndarray:
    """Square-root spectrum used to colour white noise, shape (resolution, resolution).

    Entry ``[p, q]`` belongs to integer wavenumbers ``(k_x, k_y)`` in ``np.fft`` order
    (first axis x) and equals ``s^2 * sqrt(2) * sigma * (4 pi^2 |k|^2 + tau^2)^(-alpha/2)``
    with ``s = resolution`` and ``sigma = tau^(alpha - 1)``; the ``k = 0`` entry is 0.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise ValueError(f"resolution must be an int, got {type(resolution).__name__}")
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive finite number, got {alpha}")
    if not (np.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a positive finite number, got {tau}")
    # sigma as in the FNO code for dim = 2: tau**(0.5*(2*alpha - dim)).
    sigma = tau ** (0.5 * (2.0 * alpha - 2.0))
    # fftfreq * n gives [0, 1, ..., n/2-1, -n/2, ..., -1] for even n, which is the FNO
    # wavenumber order; for odd n it is the natural symmetric extension.
    k = np.fft.fftfreq(resolution, d=1.0 / resolution)
    k_sq = k[:, None] ** 2 + k[None, :] ** 2
    sqrt_eig = (
        resolution**2 * np.sqrt(2.0) * sigma * (4.0 * np.pi**2 * k_sq + tau**2) ** (-alpha / 2.0)
    )
    # Removing the constant mode makes every sample have exactly zero spatial mean.
    sqrt_eig[0, 0] = 0.0
    return sqrt_eig


def gaussian_random_field(
    rng: np.random.Generator,
    n_samples: int,
    resolution: int,
    alpha: float = 2.0,
    tau: float = 3.0,
) -> np.ndarray:
    """Draw periodic Gaussian random fields, shape (n_samples, resolution, resolution), float64.

    Each sample is the real part of the inverse 2-D FFT of ``sqrt_eig * xi`` where ``xi`` are
    i.i.d. standard complex normals (real and imaginary parts each of variance 1/2, as
    ``torch.randn(..., dtype=cfloat)`` draws them in the FNO code). Arrays are indexed
    ``[sample, i, j]`` with ``i`` along x. Values are dimensionless; the pointwise variance is
    ``sum_{k != 0} sigma^2 (4 pi^2 |k|^2 + tau^2)^(-alpha)``. Deterministic for a given
    ``rng`` state; advances ``rng``.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer):
        raise ValueError(f"n_samples must be an int, got {type(n_samples).__name__}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    sqrt_eig = grf_sqrt_eigenvalues(resolution, alpha, tau)
    shape = (n_samples, resolution, resolution)
    # One draw of shape (..., 2) keeps the stream layout fixed: real part, then imaginary.
    normals = rng.standard_normal(shape + (2,))
    xi = (normals[..., 0] + 1j * normals[..., 1]) / np.sqrt(2.0)
    field = np.fft.ifft2(sqrt_eig * xi, axes=(-2, -1)).real
    return np.ascontiguousarray(field, dtype=np.float64)


def gaussian_random_field_1d(
    rng: np.random.Generator,
    n_samples: int,
    resolution: int,
    alpha: float = 2.0,
    tau: float = 5.0,
    sigma: float = 25.0,
) -> np.ndarray:
    """Draw periodic 1-D Gaussian random fields on [0, 1), shape (n_samples, resolution), float64.

    The law is ``N(0, sigma^2 (-Laplacian + tau^2 I)^(-alpha))`` with the constant mode removed:
    the FNO Burgers recipe, ``N(0, 625 (-Lap + 25 I)^-2)`` with the defaults. Sample values sit
    at ``x_j = j / resolution``. Scaling: a sample is the real part of the inverse FFT of
    ``c_k xi_k`` with ``c_k = resolution sqrt(2) sigma (4 pi^2 k^2 + tau^2)^(-alpha/2)``
    (``c_0 = 0``) and i.i.d. standard complex normals ``xi_k`` (real and imaginary parts of
    variance 1/2), for the integer wavenumbers ``k`` of ``np.fft.fftfreq`` order; so the
    pointwise variance is ``sum_{k != 0} sigma^2 (4 pi^2 k^2 + tau^2)^(-alpha)`` (about 0.35
    with the defaults), matching the unit-interval covariance operator up to the grid's band
    limit. Unlike :func:`gaussian_random_field`, ``sigma`` is given explicitly rather than
    derived from ``tau``. Values are dimensionless. Deterministic for a given ``rng`` state.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    for name, value in (("n_samples", n_samples), ("resolution", resolution)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    for name, value in (("alpha", alpha), ("tau", tau), ("sigma", sigma)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value}")
    k = np.fft.fftfreq(resolution, d=1.0 / resolution)
    sqrt_eig = (
        resolution * np.sqrt(2.0) * sigma * (4.0 * np.pi**2 * k**2 + tau**2) ** (-alpha / 2.0)
    )
    # Removing the constant mode makes every sample have exactly zero spatial mean.
    sqrt_eig[0] = 0.0
    # One draw of shape (..., 2) keeps the stream layout fixed: real part, then imaginary.
    normals = rng.standard_normal((n_samples, resolution, 2))
    xi = (normals[..., 0] + 1j * normals[..., 1]) / np.sqrt(2.0)
    field = np.fft.ifft(sqrt_eig * xi, axis=-1).real
    return np.ascontiguousarray(field, dtype=np.float64)


__all__.append("gaussian_random_field_1d")
