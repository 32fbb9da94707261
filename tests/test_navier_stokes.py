"""Tests of the 2-D Navier-Stokes vorticity solver against exact and independent references."""

from __future__ import annotations

import numpy as np
import pytest

from pdes.grf import gaussian_random_field
from pdes.navier_stokes import (
    CFL_MAX,
    generate_navier_stokes,
    ns_forcing,
    ns_grid,
    ns_resimulation_error,
    solve_navier_stokes,
)

TWO_PI = 2.0 * np.pi


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _xy(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    # Built independently of ns_grid: periodic points i/R, arrays indexed [i, j] = (x, y).
    x = np.arange(resolution) / resolution
    return np.meshgrid(x, x, indexing="ij")


def test_grid_and_forcing_follow_the_documented_layout() -> None:
    x, y = _xy(8)
    grid = ns_grid(8)
    assert grid.shape == (2, 8, 8) and grid.dtype == np.float64
    np.testing.assert_array_equal(grid[0], x)
    np.testing.assert_array_equal(grid[1], y)
    f = ns_forcing(8)
    assert f.shape == (8, 8)
    np.testing.assert_allclose(
        f, 0.1 * np.sqrt(2) * np.sin(TWO_PI * (x + y) + np.pi / 4), atol=1e-15
    )


def test_taylor_green_decays_at_the_exact_rate() -> None:
    """w = W cos(2 pi k x) cos(2 pi k y) has psi = w / (8 pi^2 k^2), so u . grad w = 0."""
    r, nu, dt = 16, 1e-2, 2.5e-4
    x, y = _xy(r)
    ks, amps = np.array([1, 2]), np.array([1.0, -0.5])
    shape = np.cos(TWO_PI * ks[:, None, None] * x) * np.cos(TWO_PI * ks[:, None, None] * y)
    w0 = amps[:, None, None] * shape
    times = np.array([0.0, 0.25, 1.0])
    out = solve_navier_stokes(w0, nu, times, dt=dt, forcing=np.zeros((r, r)))
    assert out.shape == (2, 3, r, r)
    lam = 8.0 * np.pi**2 * ks**2 * nu  # nu |k|^2 with |k|^2 = 2 (2 pi k)^2
    for frame, t in enumerate(times):
        exact = w0 * np.exp(-lam * t)[:, None, None]
        # True exponential: CN's error lam^3 dt^2 t / 12 is <= 1.6e-7 here (k = 2).
        assert _rel(out[:, frame], exact) <= 1e-6
        # The scheme itself: exactly CN's amplification per step, up to rounding.
        steps = round(t / dt)
        cn = ((1 - 0.5 * lam * dt) / (1 + 0.5 * lam * dt)) ** steps
        np.testing.assert_allclose(out[:, frame], w0 * cn[:, None, None], rtol=0, atol=1e-12)


def test_forced_single_shell_solution_from_rest() -> None:
    """The FNO forcing lives on |k| = 2 pi sqrt(2); w proportional to it has no advection."""
    r, nu, t = 16, 1e-2, 3.0
    lam = nu * 8.0 * np.pi**2
    out = solve_navier_stokes(np.zeros((1, r, r)), nu, [0.0, t], dt=5e-3)  # default forcing
    exact = ns_forcing(r) * (1.0 - np.exp(-lam * t)) / lam
    assert _rel(out[0, -1], exact) <= 1e-6


def test_initial_tendency_matches_hand_derived_advection() -> None:
    """Fixes the sign of u = (psi_y, -psi_x) and the [i, j] = (x, y) layout.

    For w0 = cos(2 pi x) + cos(4 pi y): psi = cos(2 pi x)/(4 pi^2) + cos(4 pi y)/(16 pi^2),
    u = -sin(4 pi y)/(4 pi), v = sin(2 pi x)/(2 pi), so u . grad w = -1.5 sin(2 pi x) sin(4 pi y)
    and, unforced, w_t(0) = 1.5 sin(2 pi x) sin(4 pi y) + nu Lap w0.
    """
    r, nu, t = 16, 1e-2, 1e-3
    x, y = _xy(r)
    w0 = np.cos(TWO_PI * x) + np.cos(2 * TWO_PI * y)
    lap = -(TWO_PI**2) * np.cos(TWO_PI * x) - (2 * TWO_PI) ** 2 * np.cos(2 * TWO_PI * y)
    rate = 1.5 * np.sin(TWO_PI * x) * np.sin(2 * TWO_PI * y) + nu * lap
    out = solve_navier_stokes(w0, nu, [0.0, t], dt=1e-4, forcing=np.zeros((r, r)))
    # A one-sided difference over t has error ~ t |w_tt| / 2, a few 1e-3 relative here.
    assert _rel((out[0, 1] - w0) / t, rate) < 1e-2
    swapped = 1.5 * np.sin(TWO_PI * y) * np.sin(2 * TWO_PI * x) + nu * lap
    assert _rel((out[0, 1] - w0) / t, swapped) > 0.5


def test_two_thirds_rule_removes_interactions_outside_the_band() -> None:
    """On R = 16 the 2/3 rule keeps |k_x|, |k_y| <= 5 in u . grad w.

    For w0 = cos(2 pi a x) + cos(2 pi b y), u . grad w is proportional to
    sin(2 pi a x) sin(2 pi b y) (see the test above), i.e. the single mode (a, b). With
    a = 6 it is truncated and w only diffuses; with a = 3 it is kept and w changes shape.
    """
    r, nu, t = 16, 1e-3, 0.5
    x, y = _xy(r)
    for a, kept in ((6, False), (3, True)):
        modes = (np.cos(TWO_PI * a * x), np.cos(TWO_PI * 2 * y))
        w0 = modes[0] + modes[1]
        out = solve_navier_stokes(w0, nu, [0.0, t], dt=1e-3, forcing=np.zeros((r, r)))
        decay = np.exp(-nu * TWO_PI**2 * np.array([a, 2]) ** 2 * t)
        decayed = modes[0] * decay[0] + modes[1] * decay[1]
        assert (_rel(out[0, 1], decayed) > 1e-2) == kept
        if not kept:
            assert _rel(out[0, 1], decayed) < 1e-6


def test_time_stepper_is_second_order() -> None:
    r, nu, t_end = 32, 1e-3, 1.0
    # Scaled up x10 so advection, not only CN diffusion, carries the time error.
    w0 = 10.0 * gaussian_random_field(np.random.default_rng(3), 2, r, alpha=2.5, tau=7.0)
    times = np.array([0.0, t_end])
    ref = solve_navier_stokes(w0, nu, times, dt=0.01 / 16)[:, -1]
    dts = (0.01, 0.005, 0.0025)
    errors = [_rel(solve_navier_stokes(w0, nu, times, dt=dt)[:, -1], ref) for dt in dts]
    orders = [np.log2(errors[k] / errors[k + 1]) for k in range(2)]
    assert all(1.8 < p < 2.2 for p in orders), (orders, errors)
    assert errors[0] < 1e-3, errors  # and the constant is small: 2nd order, not just slow


def test_mean_zero_and_enstrophy_bound_with_forcing() -> None:
    r, nu = 32, 1e-3
    w0 = gaussian_random_field(np.random.default_rng(4), 3, r, alpha=2.5, tau=7.0)
    times = np.linspace(0.0, 4.0, 9)
    out = solve_navier_stokes(w0, nu, times, dt=0.01)
    assert np.max(np.abs(out.mean(axis=(-2, -1)))) < 1e-12
    # d/dt ||w||^2 = -2 nu ||grad w||^2 + 2 <f, w> <= -2 nu (2 pi)^2 ||w||^2 + 2 ||f|| ||w||
    # (Poincare for mean-zero w), so ||w(t)|| <= max(||w0||, ||f|| / (4 pi^2 nu)) (RMS norms).
    # A few per cent slack: the 2/3 truncation of u . grad w is not exactly enstrophy-neutral.
    rms = np.sqrt(np.mean(out**2, axis=(-2, -1)))
    f_rms = np.sqrt(np.mean(ns_forcing(r) ** 2))
    bound = np.maximum(rms[:, 0], f_rms / (4 * np.pi**2 * nu))
    assert np.all(rms <= 1.02 * bound[:, None])
    # Kinetic energy stays of the order of the forced state's: no blow-up.
    assert np.all(np.isfinite(out)) and np.max(np.abs(out)) < 10.0


def test_low_viscosity_runs_finite_at_resolution_64() -> None:
    w0 = gaussian_random_field(np.random.default_rng(5), 2, 64, alpha=2.5, tau=7.0)
    out = solve_navier_stokes(w0, 1e-4, np.linspace(0.0, 2.0, 3), dt=0.01)
    assert np.all(np.isfinite(out))
    assert np.max(np.abs(out[:, -1].mean(axis=(-2, -1)))) < 1e-12


def test_step_plan_hits_requested_times_when_dt_does_not_divide() -> None:
    r, nu = 16, 1e-2
    x, y = _xy(r)
    w0 = np.cos(TWO_PI * x) * np.cos(TWO_PI * y)
    times = np.array([0.0, 0.1234, 0.5])  # 0.1234/0.01 is not an integer: 13 smaller steps
    out = solve_navier_stokes(w0, nu, times, dt=0.01, forcing=np.zeros((r, r)))
    for frame, t in enumerate(times):
        assert _rel(out[0, frame], w0 * np.exp(-8 * np.pi**2 * nu * t)) < 1e-5


def test_unstable_time_step_raises() -> None:
    w0 = 20.0 * gaussian_random_field(np.random.default_rng(6), 2, 32, alpha=2.5, tau=7.0)
    with pytest.raises(ValueError, match="CFL"):
        solve_navier_stokes(w0, 1e-3, [0.0, 1.0], dt=0.2)
    assert CFL_MAX > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"w0": np.zeros((2, 8, 9))}, "shape"),
        ({"w0": np.full((1, 8, 8), np.nan)}, "NaN"),
        ({"nu": 0.0}, "nu"),
        ({"nu": float("nan")}, "nu"),
        ({"dt": -1e-3}, "dt"),
        ({"times": [0.5, 1.0]}, "start at 0"),
        ({"times": [0.0, 1.0, 1.0]}, "increasing"),
        ({"times": [[0.0, 1.0]]}, "1-D"),
        ({"forcing": np.zeros((4, 4))}, "forcing"),
        ({"w0": np.zeros((1, 2, 2))}, ">= 4"),
    ],
)
def test_solver_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"w0": np.zeros((1, 8, 8)), "nu": 1e-3, "times": [0.0, 0.1], "dt": 1e-2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        solve_navier_stokes(**args)


def _small_data(seed: int, **kwargs: object) -> dict[str, np.ndarray]:
    settings = {"nu": 1e-3, "t_final": 1.0, "n_frames": 5, "dt": 0.025}
    settings.update(kwargs)
    return generate_navier_stokes(20, 16, seed, **settings)


def test_generate_shapes_determinism_and_progress() -> None:
    calls: list[int] = []
    data = _small_data(7, progress=calls.append)
    assert data["inputs"].shape == (20, 1, 16, 16) == data["targets"].shape
    assert data["trajectory"].shape == (20, 5, 1, 16, 16)
    assert all(v.dtype == np.float64 for v in data.values())
    np.testing.assert_allclose(data["times"], np.linspace(0.0, 1.0, 5))
    np.testing.assert_array_equal(data["grid"], np.stack(_xy(16)))
    np.testing.assert_array_equal(data["inputs"], data["trajectory"][:, 0])
    np.testing.assert_array_equal(data["targets"], data["trajectory"][:, -1])
    assert sum(calls) == 20 and len(calls) >= 1
    # The input is the documented GRF draw.
    grf = gaussian_random_field(np.random.default_rng(7), 20, 16, alpha=2.5, tau=7.0)
    np.testing.assert_array_equal(data["inputs"][:, 0], grf)
    again = _small_data(7)
    for key in data:
        np.testing.assert_array_equal(data[key], again[key])
    assert not np.allclose(_small_data(8)["inputs"], data["inputs"])
    # The target differs clearly from the input (the dynamics are not trivial).
    assert _rel(data["targets"], data["inputs"]) > 0.2


def test_generate_on_finer_solver_grid_subsamples_by_striding() -> None:
    data = generate_navier_stokes(3, 8, 1, t_final=0.5, n_frames=2, dt=0.05, solver_resolution=16)
    w0 = gaussian_random_field(np.random.default_rng(1), 3, 16, alpha=2.5, tau=7.0)
    fine = solve_navier_stokes(w0, 1e-3, [0.0, 0.5], dt=0.05)
    np.testing.assert_array_equal(data["trajectory"][:, :, 0], fine[:, :, ::2, ::2])
    with pytest.raises(ValueError, match="multiple"):
        generate_navier_stokes(3, 8, 1, solver_resolution=12)


def test_generate_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="divide"):
        generate_navier_stokes(2, 8, 0, t_final=1.0, n_frames=4, dt=0.1)
    with pytest.raises(ValueError, match="seed"):
        generate_navier_stokes(2, 8, -1)
    with pytest.raises(ValueError, match="n_frames"):
        generate_navier_stokes(2, 8, 0, n_frames=1)
    with pytest.raises(ValueError, match="progress"):
        generate_navier_stokes(2, 8, 0, progress=3)  # type: ignore[arg-type]


def test_resimulation_error_flags_corruption_only() -> None:
    data = _small_data(9)
    kwargs = {"nu": 1e-3, "t_final": 1.0, "dt": 0.025}
    inputs, targets = data["inputs"], data["targets"]
    clean = ns_resimulation_error(inputs, targets, **kwargs)
    assert clean.shape == (20,) and np.all(clean < 1e-10)
    bad_target = targets.copy()
    bad_target[3] *= 1.01
    bad_input = inputs.copy()
    bad_input[5] = np.roll(bad_input[5], 1, axis=-1)  # a plausible field, wrong for its target
    bad_input[6, 0, 2, 2] = np.nan
    err = ns_resimulation_error(bad_input, bad_target, **kwargs)
    assert err[3] > 1e-3 and err[5] > 1e-3 and np.isnan(err[6])
    others = np.setdiff1d(np.arange(20), [3, 5, 6])
    assert np.all(err[others] < 1e-10)
    # A wrong viscosity is also caught; a diverging, huge corrupted input is inf, not raised.
    assert np.all(ns_resimulation_error(inputs, targets, **{**kwargs, "nu": 2e-3}) > 1e-3)
    huge = inputs[:2] * 1e6
    assert np.all(np.isinf(ns_resimulation_error(huge, targets[:2], **kwargs)))
    with pytest.raises(ValueError, match="shape"):
        ns_resimulation_error(inputs, targets[:3], **kwargs)
