"""Tests of the 1-D GRF, the shared ETDRK4 machinery and the Burgers solver.

References are independent of the solver: the Cole-Hopf closed form, Taylor limits of the ETDRK4
coefficients, Galilean invariance, the analytic GRF variance and Richardson-style convergence.
"""

from __future__ import annotations

import numpy as np
import pytest

from pdes.burgers import (
    burgers_default_dt,
    burgers_resimulation_error,
    burgers_solver_resolution,
    generate_burgers,
    solve_burgers,
)
from pdes.grf import gaussian_random_field_1d
from pdes.spectral import dealias_mask, etdrk4_coefficients, fourier_upsample


def _cole_hopf(x: np.ndarray, t: float, nu: float, modes: list) -> np.ndarray:
    """Exact periodic Burgers solution ``u = -2 nu phi_x / phi`` (Cole-Hopf).

    ``phi = 1 + sum_m a_m exp(-nu (2 pi m)^2 t) cos(2 pi m x + theta_m)`` solves the heat
    equation ``phi_t = nu phi_xx``; with ``sum |a_m| < 1`` it stays positive, so u is smooth,
    periodic and zero-mean. ``modes``: (m, a_m, theta_m) triples.
    """
    phi, phi_x = np.ones_like(x), np.zeros_like(x)
    for m, a, theta in modes:
        k = 2 * np.pi * m
        decay = a * np.exp(-nu * k**2 * t)
        phi = phi + decay * np.cos(k * x + theta)
        phi_x = phi_x - decay * k * np.sin(k * x + theta)
    return -2.0 * nu * phi_x / phi


@pytest.mark.parametrize(
    ("nu", "t_final", "modes"),
    [
        # max |u0| ~ 1.5, fronts of slope ~25
        (0.1, 0.25, [(1, 0.5, 0.0), (2, 0.25, 0.3 - np.pi / 2)]),
        # phi nearly vanishes at x = 1/2: max |u0| ~ 0.6 with a front of slope ~40
        (0.01, 1.0, [(1, 0.96, 0.0), (3, 0.02, 1.0)]),
    ],
)
def test_matches_cole_hopf_solution(nu: float, t_final: float, modes: list) -> None:
    r = 256
    x = np.arange(r) / r
    times = np.array([0.0, t_final / 2, t_final])
    u = solve_burgers(_cole_hopf(x, 0.0, nu, modes)[None], nu, times)
    assert u.shape == (1, 3, r) and u.dtype == np.float64
    for i, t in enumerate(times):
        exact = _cole_hopf(x, t, nu, modes)
        rel = np.linalg.norm(u[0, i] - exact) / np.linalg.norm(exact)
        assert rel <= 1e-6, (nu, t, rel)
    # Strongly nonlinear regime, not a nearly linear decay: steep fronts are present.
    assert np.abs(np.diff(u[0], axis=-1)).max() * r > 20


def test_etdrk4_time_stepping_is_fourth_order() -> None:
    nu, r, n = 0.01, 128, 512
    x = np.arange(r) / r
    u0 = (0.5 * np.sin(2 * np.pi * x) + 0.2 * np.cos(4 * np.pi * x))[None]
    times = np.array([0.0, 0.5])
    ref = solve_burgers(u0, nu, times, dt=2.0**-10, solver_resolution=n)[0, -1]
    errors = [
        np.linalg.norm(solve_burgers(u0, nu, times, dt=dt, solver_resolution=n)[0, -1] - ref)
        for dt in (2.0**-5, 2.0**-6, 2.0**-7)
    ]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 3.5) & (orders < 4.5)), (orders, errors)


def test_mean_is_conserved_and_galilean_invariance_holds() -> None:
    r, nu, c = 64, 0.1, 0.25
    u0 = gaussian_random_field_1d(np.random.default_rng(4), 3, r)
    times = np.array([0.0, 0.25, 0.5])
    u = solve_burgers(u0, nu, times)
    offsets = np.array([[-0.3], [0.1], [0.7]])
    means = solve_burgers(u0 + offsets, nu, times).mean(axis=-1)
    np.testing.assert_allclose(means, np.broadcast_to(offsets, means.shape), rtol=0, atol=1e-12)
    # A coarse output grid (N = 25 R here) still averages to the conserved mean exactly.
    u0_coarse = u0[:, ::2] + offsets
    means = solve_burgers(u0_coarse, 0.01, times).mean(axis=-1)
    expected = np.broadcast_to(u0_coarse.mean(axis=-1, keepdims=True), means.shape)
    np.testing.assert_allclose(means, expected, rtol=0, atol=1e-12)
    u_c = solve_burgers(u0 + c, nu, times)
    # u(x, t; u0 + c) = u(x - c t, t; u0) + c, and c t = 4 and 8 grid spacings here.
    for i, shift in enumerate((0, 4, 8)):
        np.testing.assert_allclose(u_c[:, i], np.roll(u[:, i], shift, axis=-1) + c, atol=1e-7)


def test_low_viscosity_forms_shocks_stays_finite_and_dissipates() -> None:
    nu, n = 0.001, 8192
    assert burgers_solver_resolution(nu, 256) == 8192
    with pytest.raises(ValueError, match="cannot resolve the shock width"):
        solve_burgers(np.zeros((1, 256)), nu, [0.0, 0.1], solver_resolution=2048)
    u0 = gaussian_random_field_1d(np.random.default_rng(0), 1, n) + 0.2
    times = np.linspace(0.0, 0.25, 6)
    # Output on the internal grid itself: the grid mean and energy are then exact invariants.
    u = solve_burgers(u0, nu, times, solver_resolution=n)[0]
    assert np.all(np.isfinite(u))
    np.testing.assert_allclose(u.mean(axis=-1), u0.mean(), rtol=0, atol=1e-12)
    energy = np.mean(u**2, axis=-1)
    assert np.all(np.diff(energy) < 0), energy
    assert np.abs(u).max() <= np.abs(u0).max() * (1 + 1e-6)  # maximum principle
    slope = np.abs(np.diff(u, axis=-1)).max(axis=-1) * n
    assert slope[-1] > 10 * slope[0], slope  # a steep front has formed


def test_generate_burgers_shapes_determinism_and_progress() -> None:
    calls: list[int] = []
    d1 = generate_burgers(5, 64, seed=7, n_frames=6, progress=calls.append)
    d2 = generate_burgers(5, 64, seed=7, n_frames=6)
    d3 = generate_burgers(5, 64, seed=8, n_frames=6)
    assert sum(calls) == 5
    shapes = {k: v.shape for k, v in d1.items()}
    assert shapes == {"inputs": (5, 1, 64), "targets": (5, 1, 64), "trajectory": (5, 6, 1, 64),
                      "times": (6,), "grid": (1, 64)}
    assert all(v.dtype == np.float64 for v in d1.values())
    assert all(np.array_equal(d1[k], d2[k]) for k in d1)
    assert not np.array_equal(d1["inputs"], d3["inputs"])
    np.testing.assert_array_equal(d1["times"], np.linspace(0, 1, 6))
    np.testing.assert_array_equal(d1["grid"][0], np.arange(64) / 64)
    np.testing.assert_array_equal(d1["targets"], d1["trajectory"][:, -1])
    np.testing.assert_allclose(d1["trajectory"][:, 0], d1["inputs"], rtol=0, atol=1e-13)
    # The initial fields do not depend on the output resolution, nu or the sample count.
    fine = generate_burgers(7, 256, seed=7, nu=0.05, t_final=0.01, n_frames=2)
    np.testing.assert_array_equal(fine["inputs"][:5, :, ::4], d1["inputs"])


def test_resimulation_error_separates_good_and_corrupted_samples() -> None:
    data = generate_burgers(6, 64, seed=1, t_final=0.5, n_frames=3)
    good = burgers_resimulation_error(data["inputs"], data["targets"], nu=0.1, t_final=0.5)
    assert good.shape == (6,) and np.all(good < 1e-10), good
    targets = data["targets"].copy()
    targets[2] *= 1.01
    targets[4, 0, 10] = np.nan
    inputs = data["inputs"].copy()
    inputs[5, 0, 3] = np.inf
    inputs[3] *= 1e4  # finite but absurd: may blow up, must not disturb the other samples
    err = burgers_resimulation_error(inputs, targets, nu=0.1, t_final=0.5)
    assert err[2] > 1e-3 and err[3] > 1e-3
    assert np.isnan(err[4]) and np.isnan(err[5])
    assert np.all(err[[0, 1]] < 1e-10)


def test_grf_1d_zero_mean_and_analytic_variance() -> None:
    r, alpha, tau, sigma = 32, 2.0, 5.0, 25.0
    field = gaussian_random_field_1d(np.random.default_rng(5), 20000, r)
    assert field.shape == (20000, r) and field.dtype == np.float64
    assert np.max(np.abs(field.mean(axis=1))) < 1e-12
    k = np.fft.fftfreq(r, d=1.0 / r)[1:]
    expected = np.sum(sigma**2 * (4 * np.pi**2 * k**2 + tau**2) ** (-alpha))
    assert field.var(axis=0).mean() == pytest.approx(expected, rel=0.03)
    assert expected == pytest.approx(0.353, abs=0.002)  # the documented FNO scale
    again = gaussian_random_field_1d(np.random.default_rng(5), 20000, r)
    assert np.array_equal(field, again)


def test_etdrk4_coefficients_match_closed_forms_and_limits() -> None:
    h = 0.1
    lin = np.array([-50.0, -3.0, 2.0])  # |h lin| not small: the direct formulas are accurate
    z = h * lin
    c = etdrk4_coefficients(lin, h)
    np.testing.assert_allclose(c["E"], np.exp(z), rtol=1e-14)
    np.testing.assert_allclose(c["Q"], h * (np.exp(z / 2) - 1) / z, rtol=1e-12)
    f1 = h * (-4 - z + np.exp(z) * (4 - 3 * z + z**2)) / z**3
    np.testing.assert_allclose(c["f1"], f1, rtol=1e-10)
    # lin = 0 must reduce to classical RK4 weights: Q = h/2, f1 = f2 = f3 = h/6.
    zero = etdrk4_coefficients(np.zeros(1), h)
    for key, value in (("Q", h / 2), ("f1", h / 6), ("f2", h / 6), ("f3", h / 6)):
        assert zero[key][0] == pytest.approx(value, rel=1e-13)
    # Complex eigenvalues use the full contour; compare with the direct formula.
    lin_c = np.array([-4.0 + 30.0j, 1e-9j])
    cc = etdrk4_coefficients(lin_c, h)
    zc = h * lin_c[0]
    assert cc["f3"][0] == pytest.approx(h * (-4 - 3 * zc - zc**2 + np.exp(zc) * (4 - zc)) / zc**3)
    assert cc["f2"][1] == pytest.approx(h / 6, rel=1e-9)


def test_odd_output_grid_matches_cole_hopf() -> None:
    nu, r, modes = 0.05, 63, [(1, 0.6, 0.4)]
    x = np.arange(r) / r
    u = solve_burgers(_cole_hopf(x, 0.0, nu, modes)[None], nu, [0.0, 0.37])[0, -1]
    exact = _cole_hopf(x, 0.37, nu, modes)
    assert np.linalg.norm(u - exact) / np.linalg.norm(exact) < 1e-6


def test_dealias_mask_and_fourier_upsampling() -> None:
    np.testing.assert_array_equal(dealias_mask(12), [1, 1, 1, 1, 0, 0, 0])  # keeps |k| < 4
    x = np.arange(16) / 16
    u = np.cos(2 * np.pi * 3 * x) + 0.5 * np.cos(2 * np.pi * 8 * x)  # includes Nyquist
    v_hat = fourier_upsample(u[None], 64)
    fine = np.fft.irfft(v_hat, n=64)[0]
    xf = np.arange(64) / 64
    np.testing.assert_allclose(fine, np.cos(6 * np.pi * xf) + 0.5 * np.cos(16 * np.pi * xf),
                               atol=1e-13)


def test_default_grid_and_step_rules() -> None:
    # R m with m >= 2 FFT-friendly and R m >= 8 / nu: 313 -> 320 (5-smooth).
    assert [burgers_solver_resolution(nu, 256) for nu in (0.1, 0.01, 1e-4)] == [512, 1024, 81920]
    assert burgers_default_dt(0.1) == 1 / 256
    assert burgers_default_dt(0.01) == 1 / 450
    assert burgers_default_dt(0.001) == 1 / 4500
    assert burgers_default_dt(0.01, amplitude=6.0) == 1 / 1800


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: solve_burgers(np.zeros(8), 0.1, [0.0, 1.0]), r"\(n, R\)"),
        (lambda: solve_burgers(np.full((1, 8), np.nan), 0.1, [0.0, 1.0]), "NaN or Inf"),
        (lambda: solve_burgers(np.zeros((1, 8)), -0.1, [0.0, 1.0]), "nu must be"),
        (lambda: solve_burgers(np.zeros((1, 8)), 0.1, [0.5, 1.0]), "start at 0"),
        (lambda: solve_burgers(np.zeros((1, 8)), 0.1, [0.0, 1.0, 0.5]), "increasing"),
        (lambda: solve_burgers(np.zeros((1, 8)), 0.1, [0.0, 1.0], dt=0.0), "dt must be"),
        (lambda: solve_burgers(np.zeros((1, 8)), 0.1, [0, 1], solver_resolution=100),
         "multiple"),
        (lambda: generate_burgers(0, 8, 0), "n_samples"),
        (lambda: generate_burgers(2, 8, -1), "seed"),
        (lambda: generate_burgers(2, 8, 0, n_frames=1), "n_frames"),
        (lambda: generate_burgers(2, 8, 0, progress=3), "progress"),
        (lambda: burgers_resimulation_error(np.zeros((2, 8)), np.zeros((2, 8)), nu=0.1,
                                            t_final=1.0), r"\(n, 1, R\)"),
        (lambda: burgers_resimulation_error(np.zeros((2, 1, 8)), np.zeros((3, 1, 8)), nu=0.1,
                                            t_final=1.0), "differ in shape"),
        (lambda: gaussian_random_field_1d(np.random.default_rng(), 1, 8, sigma=0.0), "sigma"),
        (lambda: etdrk4_coefficients(np.zeros((2, 2)), 0.1), "1-D"),
    ],
)
def test_bad_input_raises_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
