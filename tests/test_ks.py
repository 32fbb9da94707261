"""Tests of the Kuramoto-Sivashinsky solver against independent references.

References: the exact linear growth rates ``q^2 - q^4``, exact conservation of the mean,
Richardson-style convergence against a small-step run, and boundedness on the attractor.
"""

from __future__ import annotations

import numpy as np
import pytest

from pdes.ks import (
    KS_DEFAULT_LENGTH,
    generate_ks,
    ks_initial_condition,
    ks_resimulation_error,
    ks_solver_resolution,
    solve_ks,
)

L0 = KS_DEFAULT_LENGTH


@pytest.mark.parametrize("mode", [8, 24])  # q = 0.5 (unstable), q = 1.5 (damped)
def test_tiny_perturbation_follows_linear_growth_rate(mode: int) -> None:
    r, eps = 64, 1e-10
    q = 2 * np.pi * mode / L0
    x = np.arange(r) * L0 / r
    # 1.3 is off the dt grid, so the extra partial step is exercised too.
    times = np.array([0.0, 1.3, 4.0])
    u = solve_ks(eps * np.cos(q * x)[None], L0, times)[0]
    for i, t in enumerate(times):
        exact = eps * np.exp((q**2 - q**4) * t) * np.cos(q * x)
        assert np.linalg.norm(u[i] - exact) / np.linalg.norm(exact) < 1e-6, (mode, t)
    growth = np.linalg.norm(u[-1]) / np.linalg.norm(u[0])
    assert (growth > 2) if mode == 8 else (growth < 1e-4), growth


def test_mean_is_conserved_on_the_attractor() -> None:
    state = generate_ks(3, 128, seed=2, t_burn=60.0, t_final=1.0, n_frames=2)["inputs"][:, 0]
    offsets = np.array([[0.0], [0.7], [-1.3]])
    u = solve_ks(state + offsets, L0, np.linspace(0.0, 50.0, 11))
    means = u.mean(axis=-1)
    np.testing.assert_allclose(means, np.broadcast_to(offsets, means.shape), rtol=0, atol=1e-12)
    assert np.all(np.abs(u).max(axis=-1) > 1.0)  # genuinely nonlinear, chaotic states
    # With N > 3R point values alias modes |k| = R, 2R onto the mean; the output removes that
    # constant, which must stay as tiny as the spectrum there (q = 8: ~1e-10).
    fine = solve_ks(state + offsets, L0, [0.0, 5.0], solver_resolution=1024)
    means = fine.mean(axis=-1)
    np.testing.assert_allclose(means, np.broadcast_to(offsets, means.shape), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fine[:, 1], u[:, 1], rtol=0, atol=1e-7)


def test_etdrk4_is_fourth_order_on_a_smooth_short_run() -> None:
    r = 128
    x = np.arange(r) * L0 / r
    u0 = (np.cos(x / 16) * (1 + np.sin(x / 16)))[None]  # Kassam & Trefethen's start
    times = np.array([0.0, 1.0])
    ref = solve_ks(u0, L0, times, dt=2.0**-9)[0, -1]
    errors = [np.linalg.norm(solve_ks(u0, L0, times, dt=dt)[0, -1] - ref)
              for dt in (0.25, 0.125, 0.0625)]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 3.5) & (orders < 4.5)), (orders, errors)


def test_length_100_stays_bounded_and_chaotic() -> None:
    length, r = 100.0, 128
    u0 = ks_initial_condition(np.random.default_rng(3), 2, length, r)
    u = solve_ks(u0, length, np.linspace(0.0, 200.0, 9))
    assert np.all(np.isfinite(u))
    assert np.abs(u).max() < 10
    assert np.abs(u[:, -1]).max() > 1.0  # grew from 0.1 to the attractor


def test_generate_ks_shapes_determinism_and_progress() -> None:
    calls: list[int] = []
    kwargs = {"t_burn": 30.0, "t_final": 5.0, "n_frames": 6}
    d1 = generate_ks(4, 64, seed=5, progress=calls.append, **kwargs)
    d2 = generate_ks(4, 64, seed=5, **kwargs)
    d3 = generate_ks(4, 64, seed=6, **kwargs)
    assert sum(calls) == 4
    shapes = {k: v.shape for k, v in d1.items()}
    assert shapes == {"inputs": (4, 1, 64), "targets": (4, 1, 64), "trajectory": (4, 6, 1, 64),
                      "times": (6,), "grid": (1, 64)}
    assert all(v.dtype == np.float64 for v in d1.values())
    assert all(np.array_equal(d1[k], d2[k]) for k in d1)
    assert not np.array_equal(d1["inputs"], d3["inputs"])
    np.testing.assert_array_equal(d1["times"], np.linspace(0.0, 5.0, 6))
    np.testing.assert_allclose(d1["grid"][0], np.arange(64) * L0 / 64, rtol=1e-15)
    np.testing.assert_array_equal(d1["targets"], d1["trajectory"][:, -1])
    np.testing.assert_allclose(d1["trajectory"][:, 0], d1["inputs"], rtol=0, atol=1e-13)
    # A smaller dataset is a prefix of a larger one with the same seed.
    d_big = generate_ks(6, 64, seed=5, **kwargs)
    np.testing.assert_array_equal(d_big["trajectory"][:4], d1["trajectory"])


def test_resimulation_error_separates_good_and_corrupted_samples() -> None:
    data = generate_ks(5, 128, seed=0, t_burn=50.0, t_final=20.0, n_frames=3)
    kwargs = {"length": L0, "t_final": 20.0}
    good = ks_resimulation_error(data["inputs"], data["targets"], **kwargs)
    assert good.shape == (5,) and np.all(good < 1e-10), good
    targets = data["targets"].copy()
    targets[1] *= 1.01
    targets[3, 0, 0] = np.nan
    err = ks_resimulation_error(data["inputs"], targets, **kwargs)
    assert err[1] > 1e-3 and np.isnan(err[3])
    assert np.all(err[[0, 2, 4]] < 1e-10)


def test_default_resolution_rule() -> None:
    assert ks_solver_resolution(L0, 128) == 384  # dealiased cutoff 2 pi 128 / L0 = 7.96 ~ 8
    assert ks_solver_resolution(100.0, 128) == 384
    assert ks_solver_resolution(L0, 512) == 1024  # never below 2R
    with pytest.raises(ValueError, match="resolves wavenumbers only up to"):
        solve_ks(np.zeros((1, 128)), L0, [0.0, 1.0], solver_resolution=128)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: solve_ks(np.zeros((1, 8, 1)), L0, [0.0, 1.0]), r"\(n, R\)"),
        (lambda: solve_ks(np.zeros((1, 8)), 0.0, [0.0, 1.0]), "length must be"),
        (lambda: solve_ks(np.zeros((1, 8)), L0, [0.0, 1.0], dt=-0.1), "dt must be"),
        (lambda: solve_ks(np.zeros((1, 8)), L0, [[0.0, 1.0]]), "1-D"),
        (lambda: solve_ks(np.zeros((1, 8)), L0, [0, 1], solver_resolution=100), "multiple"),
        (lambda: generate_ks(2, 8, 0, t_burn=-1.0), "t_burn"),
        (lambda: generate_ks(2, 8, 0, t_final=np.nan), "t_final"),
        (lambda: generate_ks(2, 1, 0), "resolution"),
        (lambda: ks_initial_condition(0, 2, L0, 8), "rng"),
        (lambda: ks_resimulation_error(np.zeros((2, 2, 8)), np.zeros((2, 2, 8)), length=L0,
                                       t_final=1.0), r"\(n, 1, R\)"),
    ],
)
def test_bad_input_raises_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
