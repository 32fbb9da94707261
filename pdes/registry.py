"""The PDEs the bench knows: how to generate a split, which parameters it takes (with declared
ranges), and the per-sample feature table its expectation suite validates.

Every generator returns the same dict layout, turned into a :class:`pdes.dataset.Dataset`:
``inputs`` (n, c_in, *spatial), ``targets`` (n, c_out, *spatial), ``grid`` (d, *spatial) and, for
time-dependent PDEs, ``trajectory`` (n, n_t, c, *spatial) with ``times`` (n_t,).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pdes.dataset import Dataset, darcy_grid, make_dataset

Generator = Callable[..., dict[str, np.ndarray]]
Resimulator = Callable[..., np.ndarray]


@dataclass(frozen=True)
class PDESpec:
    """What the pipeline needs to know about one PDE."""

    name: str
    dim: int
    default_resolution: int
    defaults: dict[str, float]
    ranges: dict[str, tuple[float, float]]
    generate: Generator
    resimulate: Resimulator | None  # re-simulation error per sample (time-dependent PDEs)
    periodic: bool
    description: str

    @property
    def time_dependent(self) -> bool:
        """Evolution equations (inputs are states, targets later states) can be rolled out."""
        return self.resimulate is not None


def _darcy(n: int, resolution: int, seed: int, progress: Callable[[int], None] | None = None,
           **p: float) -> dict[str, np.ndarray]:
    from pdes.darcy import generate_darcy

    a, u = generate_darcy(n, resolution, seed, alpha=p["alpha"], tau=p["tau"], high=p["high"],
                          low=p["low"], forcing=p["forcing"], progress=progress)
    return {"inputs": a[:, None], "targets": u[:, None], "grid": darcy_grid(resolution)}


def _burgers(n: int, resolution: int, seed: int, progress: Callable[[int], None] | None = None,
             **p: float) -> dict[str, np.ndarray]:
    from pdes.burgers import generate_burgers

    return generate_burgers(n, resolution, seed, nu=p["nu"], t_final=p["t_final"],
                            n_frames=int(p["n_frames"]), progress=progress)


def _burgers_resim(inputs: np.ndarray, targets: np.ndarray, **p: float) -> np.ndarray:
    from pdes.burgers import burgers_resimulation_error

    return burgers_resimulation_error(inputs, targets, nu=p["nu"], t_final=p["t_final"])


def _ks(n: int, resolution: int, seed: int, progress: Callable[[int], None] | None = None,
        **p: float) -> dict[str, np.ndarray]:
    from pdes.ks import generate_ks

    return generate_ks(n, resolution, seed, length=p["length"], t_burn=p["t_burn"],
                       t_final=p["t_final"], n_frames=int(p["n_frames"]), dt=p["dt"],
                       progress=progress)


def _ks_resim(inputs: np.ndarray, targets: np.ndarray, **p: float) -> np.ndarray:
    from pdes.ks import ks_resimulation_error

    return ks_resimulation_error(inputs, targets, length=p["length"], t_final=p["t_final"],
                                 dt=p["dt"])


def _ns(n: int, resolution: int, seed: int, progress: Callable[[int], None] | None = None,
        **p: float) -> dict[str, np.ndarray]:
    from pdes.navier_stokes import generate_navier_stokes

    return generate_navier_stokes(n, resolution, seed, nu=p["nu"], t_final=p["t_final"],
                                  n_frames=int(p["n_frames"]), dt=p["dt"], alpha=p["alpha"],
                                  tau=p["tau"], progress=progress)


def _ns_resim(inputs: np.ndarray, targets: np.ndarray, **p: float) -> np.ndarray:
    from pdes.navier_stokes import ns_resimulation_error

    return ns_resimulation_error(inputs, targets, nu=p["nu"], t_final=p["t_final"], dt=p["dt"])


PDES: dict[str, PDESpec] = {
    "darcy": PDESpec(
        "darcy", 2, 32, {"alpha": 2.0, "tau": 3.0, "high": 12.0, "low": 3.0, "forcing": 1.0},
        {"alpha": (1.0, 5.0), "tau": (0.1, 50.0), "high": (0.01, 1e4), "low": (0.01, 1e4),
         "forcing": (1e-6, 1e4)},
        _darcy, None, False, "-div(a grad u) = f on the unit square, a from a thresholded GRF"),
    "burgers": PDESpec(
        "burgers", 1, 256, {"nu": 0.1, "t_final": 1.0, "n_frames": 11},
        # below nu = 1e-3 the resolved grid (8/nu points) makes generation impractical
        {"nu": (1e-3, 10.0), "t_final": (1e-3, 100.0), "n_frames": (2, 1000)},
        _burgers, _burgers_resim, True, "u_t + (u^2/2)_x = nu u_xx, periodic on (0, 1)"),
    "ks": PDESpec(
        # t_final 2: a one-step map a surrogate can learn (with t_final 20 both models of a
        # default run only reached relative L2 0.97); longer horizons are rollouts of it
        "ks", 1, 128, {"length": 32 * np.pi, "t_burn": 100.0, "t_final": 2.0, "n_frames": 9,
                       "dt": 0.25},
        {"length": (1.0, 1e3), "t_burn": (0.0, 1e4), "t_final": (1e-3, 1e3),
         "n_frames": (2, 1000), "dt": (1e-4, 1.0)},
        _ks, _ks_resim, True, "u_t = -u u_x - u_xx - u_xxxx, periodic on (0, L)"),
    "navier_stokes": PDESpec(
        "navier_stokes", 2, 64, {"nu": 1e-3, "t_final": 5.0, "n_frames": 11, "dt": 0.025,
                                 "alpha": 2.5, "tau": 7.0},
        {"nu": (1e-5, 1.0), "t_final": (1e-3, 1e3), "n_frames": (2, 1000), "dt": (1e-5, 0.1),
         "alpha": (1.0, 5.0), "tau": (0.1, 50.0)},
        _ns, _ns_resim, True, "vorticity form on the unit torus, FNO forcing"),
}


def get_spec(name: str) -> PDESpec:
    if name not in PDES:
        raise ValueError(f"unknown PDE {name!r}; choose one of {sorted(PDES)}")
    return PDES[name]


def resolve_params(name: str, params: dict[str, Any] | None = None) -> dict[str, float]:
    """The PDE's defaults with ``params`` applied; unknown names or values outside the declared
    ranges raise ValueError naming the parameter and what is allowed."""
    spec = get_spec(name)
    unknown = sorted(set(params or {}) - set(spec.defaults))
    if unknown:
        raise ValueError(f"{name} has no parameter(s) {unknown}; it takes {sorted(spec.defaults)}")
    out = {**spec.defaults, **(params or {})}
    for key, value in out.items():
        lo, hi = spec.ranges[key]
        if not isinstance(value, int | float) or not lo <= value <= hi:
            raise ValueError(f"{name} parameter {key}={value!r} outside its declared range "
                             f"[{lo}, {hi}]")
    return out


def generating_config(name: str, split: str, n_samples: int, resolution: int, seed: int,
                      params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything that determines a split's content (its hash is the cache key)."""
    return {"pde": name, "split": split, "n_samples": n_samples, "resolution": resolution,
            "seed": seed, **resolve_params(name, params)}


def build_split(gen: dict[str, Any], progress: Callable[[int], None] | None = None) -> Dataset:
    """Generate the split described by ``gen`` (from :func:`generating_config`)."""
    spec = get_spec(gen["pde"])
    params = {k: gen[k] for k in spec.defaults}
    out = spec.generate(gen["n_samples"], gen["resolution"], gen["seed"], progress=progress,
                        **params)
    per_sample = {k: np.full(gen["n_samples"], float(v)) for k, v in params.items()}
    return make_dataset(gen["pde"], gen["split"], gen["seed"], out["inputs"], out["targets"],
                        out["grid"], gen, parameters=per_sample,
                        trajectory=out.get("trajectory"), times=out.get("times"))


def input_hashes(inputs: np.ndarray) -> np.ndarray:
    """A short hash of each sample's input bytes (n,) str: equal inputs, equal hashes (leakage)."""
    flat = np.ascontiguousarray(inputs, dtype="<f8").reshape(inputs.shape[0], -1)
    return np.array([hashlib.sha256(row.tobytes()).hexdigest()[:16] for row in flat])
