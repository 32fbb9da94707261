"""Tests of the GRF sampler and the Darcy solver against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from pdes.darcy import (
    TORSION_MAX,
    assemble_darcy,
    darcy_coefficient,
    darcy_residual,
    generate_darcy,
    solve_darcy,
)
from pdes.grf import gaussian_random_field

# Continuous maximum of the torsion function on the unit square (series solution).
TORSION_MAX_EXACT = 0.07367


def _nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(0.0, 1.0, n)
    return np.meshgrid(x, x, indexing="ij")


def _manufactured(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """a, f, exact u for u = sin(pi x) sin(pi y), a = 1 + 0.5 sin(2 pi x) cos(pi y)."""
    x, y = _nodes(n)
    pi = np.pi
    u = np.sin(pi * x) * np.sin(pi * y)
    a = 1.0 + 0.5 * np.sin(2 * pi * x) * np.cos(pi * y)
    # f = -(a_x u_x + a_y u_y + a lap u), with lap u = -2 pi^2 u, derived by hand.
    u_x = pi * np.cos(pi * x) * np.sin(pi * y)
    u_y = pi * np.sin(pi * x) * np.cos(pi * y)
    a_x = pi * np.cos(2 * pi * x) * np.cos(pi * y)
    a_y = -0.5 * pi * np.sin(2 * pi * x) * np.sin(pi * y)
    f = 2 * pi**2 * a * u - a_x * u_x - a_y * u_y
    return a, f, u


def test_manufactured_solution_variable_coefficient_is_second_order() -> None:
    sizes = (17, 33, 65)
    errors = []
    for n in sizes:
        a, f, u_exact = _manufactured(n)
        u = solve_darcy(a, f)
        errors.append(np.max(np.abs(u - u_exact)))
    orders = [np.log2(errors[k] / errors[k + 1]) for k in range(len(sizes) - 1)]
    for order in orders:
        assert 1.8 < order < 2.2, f"observed orders {orders}, errors {errors}"
    # Error ~ C h^2 with C ~ 0.85 (for a = 1 alone the 5-point stencil gives C = pi^2/12
    # ~ 0.82), i.e. ~2.1e-4 at h = 1/64; a wrong f or face average would be far above 3e-4.
    assert errors[-1] < 3e-4, errors


def test_constant_coefficient_scales_and_matches_torsion_maximum() -> None:
    n = 65
    u_one = solve_darcy(np.ones((n, n)), 1.0)
    u_c = solve_darcy(np.full((n, n), 7.5), 1.0)
    np.testing.assert_allclose(u_c, u_one / 7.5, rtol=0, atol=1e-12)
    assert abs(u_one.max() - TORSION_MAX_EXACT) / TORSION_MAX_EXACT < 0.01
    assert u_one.max() <= TORSION_MAX
    # Symmetric problem on a symmetric grid: the maximum sits at the centre node.
    assert np.unravel_index(np.argmax(u_one), u_one.shape) == (32, 32)


def test_grf_darcy_batch_respects_bounds_and_has_tiny_residual() -> None:
    a, u = generate_darcy(20, 32, seed=3)
    assert np.all(u >= 0.0)
    upper = TORSION_MAX / a.min(axis=(1, 2))
    assert np.all(u.max(axis=(1, 2)) <= upper)
    assert np.all(u[:, 0, :] == 0) and np.all(u[:, -1, :] == 0)
    assert np.all(u[:, :, 0] == 0) and np.all(u[:, :, -1] == 0)
    residual = darcy_residual(a, u, 1.0)
    assert residual.shape == (20,)
    assert np.all(residual < 1e-10), residual.max()
    # A 1% interior perturbation must be caught loudly by the residual.
    noise = np.random.default_rng(0).standard_normal(u.shape) * 0.01 * u.max()
    noise[:, [0, -1], :] = 0.0
    noise[:, :, [0, -1]] = 0.0
    assert np.all(darcy_residual(a, u + noise, 1.0) > 1e-3)


def test_residual_matches_matrix_and_single_pair_returns_float() -> None:
    n = 9
    rng = np.random.default_rng(1)
    a = rng.uniform(1.0, 5.0, (n, n))
    u = np.zeros((n, n))
    u[1:-1, 1:-1] = rng.standard_normal((n - 2, n - 2))
    f = rng.uniform(0.5, 2.0, (n, n))
    # Reference: the same residual through the assembled sparse matrix.
    r = assemble_darcy(a) @ u[1:-1, 1:-1].ravel() - f[1:-1, 1:-1].ravel()
    expected = np.linalg.norm(r) / np.linalg.norm(f[1:-1, 1:-1])
    got = darcy_residual(a, u, f)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-12)
    batch = darcy_residual(np.stack([a, a]), np.stack([u, 2 * u]), f)
    assert batch[0] == pytest.approx(expected, rel=1e-12)


def test_residual_propagates_nan_without_raising() -> None:
    a, u = generate_darcy(3, 16, seed=0)
    u = u.copy()
    u[1, 5, 5] = np.nan
    residual = darcy_residual(a, u)
    assert np.isnan(residual[1])
    assert np.all(np.isfinite(residual[[0, 2]]))


def test_assembled_matrix_is_spd_and_matches_kronecker_laplacian() -> None:
    n = 8
    a = np.random.default_rng(2).uniform(3.0, 12.0, (n, n))
    mat = assemble_darcy(a)
    assert isinstance(mat, sp.csr_matrix)
    dense = mat.toarray()
    assert dense.shape == ((n - 2) ** 2, (n - 2) ** 2)
    assert np.array_equal(dense, dense.T)
    assert np.linalg.eigvalsh(dense).min() > 0
    # For a = 1 the matrix is the textbook Kronecker-sum Laplacian with known eigenvalues.
    m, h = n - 2, 1.0 / (n - 1)
    t = sp.diags([-np.ones(m - 1), 2 * np.ones(m), -np.ones(m - 1)], [-1, 0, 1]) / h**2
    lap = (sp.kron(t, sp.eye(m)) + sp.kron(sp.eye(m), t)).toarray()
    np.testing.assert_allclose(assemble_darcy(np.ones((n, n))).toarray(), lap, atol=1e-10)
    lam_min = 8.0 / h**2 * np.sin(np.pi * h / 2) ** 2
    assert np.linalg.eigvalsh(lap).min() == pytest.approx(lam_min, rel=1e-10)


def test_generate_darcy_is_deterministic_and_reports_progress() -> None:
    calls: list[int] = []
    a1, u1 = generate_darcy(4, 16, seed=11, progress=calls.append)
    a2, u2 = generate_darcy(4, 16, seed=11)
    a3, _ = generate_darcy(4, 16, seed=12)
    assert calls == [1, 1, 1, 1]
    assert a1.shape == u1.shape == (4, 16, 16) and a1.dtype == u1.dtype == np.float64
    assert np.array_equal(a1, a2) and np.array_equal(u1, u2)
    assert not np.array_equal(a1, a3)
    assert set(np.unique(a1)) <= {3.0, 12.0}
    assert set(np.unique(generate_darcy(2, 8, seed=0, high=5.0, low=1.0)[0])) <= {1.0, 5.0}


def test_grf_zero_mean_and_fno_variance() -> None:
    n, alpha, tau = 16, 2.0, 3.0
    field = gaussian_random_field(np.random.default_rng(5), 3000, n, alpha, tau)
    assert field.shape == (3000, n, n) and field.dtype == np.float64
    assert np.max(np.abs(field.mean(axis=(1, 2)))) < 1e-12 * field.std()
    # Pointwise variance = sum_{k != 0} sigma^2 (4 pi^2 |k|^2 + tau^2)^-alpha (FNO scaling).
    sigma2 = tau ** (2 * alpha - 2)
    ks = [k if k < n // 2 else k - n for k in range(n)]
    expected = sum(
        sigma2 * (4 * np.pi**2 * (kx**2 + ky**2) + tau**2) ** (-alpha)
        for kx in ks
        for ky in ks
        if (kx, ky) != (0, 0)
    )
    assert field.var(axis=0).mean() == pytest.approx(expected, rel=0.05)
    again = gaussian_random_field(np.random.default_rng(5), 3000, n, alpha, tau)
    assert np.array_equal(field, again)


def test_darcy_coefficient_thresholds_at_zero() -> None:
    field = np.array([[-1.0, 0.0], [2.0, -1e-300]])
    np.testing.assert_array_equal(darcy_coefficient(field), [[3.0, 12.0], [12.0, 3.0]])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: solve_darcy(np.ones((5, 6))), r"square \(N, N\)"),
        (lambda: solve_darcy(-np.ones((5, 5))), "strictly positive"),
        (lambda: solve_darcy(np.ones((5, 5)), np.ones((4, 4))), r"forcing must be"),
        (lambda: darcy_residual(np.ones((5, 5)), np.ones((6, 6))), "same shape"),
        (lambda: darcy_residual(np.ones((5, 5)), np.ones((5, 5)), 0.0), "forcing is zero"),
        (lambda: generate_darcy(2, 2, seed=0), "resolution must be >= 3"),
        (lambda: gaussian_random_field(np.random.default_rng(), 0, 8), "n_samples"),
        (lambda: gaussian_random_field(np.random.default_rng(), 1, 8, tau=0.0), "tau"),
    ],
)
def test_bad_input_raises_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# --- Fast path: the batched nested-dissection solver behind generate_darcy ---------------------


def _spsolve_reference(a: np.ndarray, f: float | np.ndarray = 1.0) -> np.ndarray:
    """One scipy spsolve per sample (solve_darcy), the reference the fast path must match."""
    f_arr = np.asarray(f, dtype=np.float64)
    return np.stack([solve_darcy(a[k], f_arr[k] if f_arr.ndim == 3 else f)
                     for k in range(a.shape[0])])


def _max_rel_diff(u: np.ndarray, ref: np.ndarray) -> float:
    """Largest per-sample max-norm relative difference."""
    return float(np.max(np.max(np.abs(u - ref), axis=(1, 2)) / np.max(np.abs(ref), axis=(1, 2))))


@pytest.mark.parametrize(("resolution", "n_samples"), [(33, 8), (64, 4), (10, 5)])
def test_dissection_matches_spsolve_on_grf_coefficients(resolution: int, n_samples: int) -> None:
    a, u = generate_darcy(n_samples, resolution, seed=resolution, workers=1)
    a_ref, u_ref = generate_darcy(n_samples, resolution, seed=resolution, method="spsolve")
    assert np.array_equal(a, a_ref)  # the same GRF draws whatever the solver
    np.testing.assert_array_equal(_spsolve_reference(a), u_ref)
    assert _max_rel_diff(u, u_ref) < 1e-8
    assert np.all(darcy_residual(a, u, 1.0) < 1e-10)
    assert np.all(u[:, [0, -1], :] == 0) and np.all(u[:, :, [0, -1]] == 0)


def test_dissection_handles_general_coefficients_forcing_and_tiny_grids() -> None:
    from pdes.dissection import solve_batch

    rng = np.random.default_rng(7)
    for n in (3, 4, 5, 6, 17):
        # Rough, high-contrast (e^-3 to e^3) coefficients and a per-sample nodal forcing.
        a = np.exp(rng.uniform(-3.0, 3.0, (3, n, n)))
        f = rng.uniform(-1.0, 2.0, (3, n, n))
        u = solve_batch(a, f, workers=1)
        assert _max_rel_diff(u, _spsolve_reference(a, f)) < 1e-8, n
        assert np.all(darcy_residual(a, u, f) < 1e-10), n
    # A shared (N, N) forcing gives the same as passing it per sample.
    a = np.exp(rng.uniform(-1.0, 1.0, (2, 9, 9)))
    f = rng.uniform(0.5, 1.5, (9, 9))
    np.testing.assert_array_equal(solve_batch(a, f), solve_batch(a, np.stack([f, f])))


def test_fast_generate_darcy_is_deterministic_across_seeds_and_workers() -> None:
    calls: list[int] = []
    a1, u1 = generate_darcy(20, 17, seed=5, workers=1)
    a2, u2 = generate_darcy(20, 17, seed=5, workers=2, progress=calls.append)
    assert np.array_equal(a1, a2) and np.array_equal(u1, u2)  # bit for bit, any process count
    assert calls == [1] * 20
    _, u3 = generate_darcy(20, 17, seed=6, workers=1)
    assert not np.array_equal(u1, u3)
    # Solving a sample alone or inside a batch gives the same bits.
    from pdes.dissection import solve_batch

    np.testing.assert_array_equal(solve_batch(a1[3:4], 1.0), u1[3:4])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(method="lu"), "method must be"),
        (dict(workers=0), "workers must be"),
        (dict(workers=1.5), "workers must be"),
    ],
)
def test_generate_darcy_rejects_bad_solver_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_darcy(2, 8, seed=0, **kwargs)
    for n_samples, bad in ((0, ">= 1"), (40.0, "an int")):  # caught before any fork
        with pytest.raises(ValueError, match=f"n_samples must be {bad}"):
            generate_darcy(n_samples, 8, seed=0)


def test_chunked_grf_draws_equal_one_draw() -> None:
    # The parallel generator draws the fields chunk by chunk from one generator; that is only
    # the same data if successive draws continue the stream sample by sample.
    full = gaussian_random_field(np.random.default_rng(9), 21, 16, alpha=2.5, tau=4.0)
    rng = np.random.default_rng(9)
    parts = [gaussian_random_field(rng, c, 16, alpha=2.5, tau=4.0) for c in (8, 8, 5)]
    np.testing.assert_array_equal(np.concatenate(parts), full)
    # More workers than chunks, and a short last chunk, change nothing either.
    a1, u1 = generate_darcy(9, 12, seed=2, workers=1)
    a3, u3 = generate_darcy(9, 12, seed=2, workers=3)
    assert np.array_equal(a1, a3) and np.array_equal(u1, u3)
