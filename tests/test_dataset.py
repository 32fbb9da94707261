"""Tests of the HDF5 dataset layout, hashing, caching and the Darcy feature table."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from pdes.darcy import TORSION_MAX, generate_darcy
from pdes.dataset import (
    Dataset,
    cached_dataset,
    config_hash,
    content_hash,
    darcy_grid,
    load_dataset,
    make_dataset,
    save_dataset,
)
from pdes.features import FEATURE_COLUMNS, darcy_features

CONFIG = {"pde": "darcy", "n_samples": 4, "resolution": 9, "seed": 7, "alpha": 2.0}


def _build(config: dict = CONFIG) -> Dataset:
    a, u = generate_darcy(config["n_samples"], config["resolution"], seed=config["seed"])
    return make_dataset(
        "darcy",
        "train",
        config["seed"],
        a[:, None],
        u[:, None],
        darcy_grid(config["resolution"]),
        config,
        parameters={"index": np.arange(config["n_samples"])},
    )


def test_config_and_content_hash_follow_documented_recipe() -> None:
    canonical = json.dumps(CONFIG, sort_keys=True, separators=(",", ":"))
    assert config_hash(CONFIG) == hashlib.sha256(canonical.encode()).hexdigest()
    assert config_hash(dict(reversed(list(CONFIG.items())))) == config_hash(CONFIG)
    assert config_hash({**CONFIG, "seed": 8}) != config_hash(CONFIG)
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    g = np.zeros((2, 2, 3))
    ref = hashlib.sha256()
    for name, arr in (("inputs", x), ("targets", x), ("grid", g)):
        ref.update(f"{name}[{','.join(map(str, arr.shape))}];".encode())
        ref.update(arr.astype("<f8").tobytes())
    assert content_hash(x, x, g) == ref.hexdigest()
    # Same bytes, different shape: must differ.
    assert content_hash(x.reshape(1, 1, 3, 2), x.reshape(1, 1, 3, 2), g.reshape(2, 3, 2)) != (
        ref.hexdigest()
    )


def test_save_load_round_trip(tmp_path: Path) -> None:
    ds = _build()
    path = tmp_path / "nested" / "dir" / "darcy_train.h5"
    save_dataset(path, ds)
    assert sorted(p.name for p in path.parent.iterdir()) == ["darcy_train.h5"]  # no temp left
    back = load_dataset(path)
    for name in ("inputs", "targets", "grid"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
    np.testing.assert_array_equal(back.parameters["index"], np.arange(4))
    assert (back.pde, back.split, back.seed) == ("darcy", "train", 7)
    assert back.config == CONFIG
    assert back.config_hash == ds.config_hash == config_hash(CONFIG)
    assert back.content_hash == ds.content_hash
    assert back.n_samples == 4 and back.resolution == (9, 9)
    with h5py.File(path, "r") as h5:
        assert h5.attrs["format_version"] == 1
        assert json.loads(h5.attrs["config"]) == CONFIG
        assert h5["inputs"].shape == (4, 1, 9, 9) and h5["inputs"].dtype == np.float64


def test_content_hash_changes_with_one_value() -> None:
    ds = _build()
    targets = ds.targets.copy()
    targets[2, 0, 4, 4] += 1e-12
    assert content_hash(ds.inputs, targets, ds.grid) != ds.content_hash


def test_tampered_file_fails_verification(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    save_dataset(path, _build())
    with h5py.File(path, "r+") as h5:
        h5["targets"][1, 0, 3, 3] = 0.5
    with pytest.raises(ValueError, match="content hash mismatch"):
        load_dataset(path)
    assert load_dataset(path, verify=False).targets[1, 0, 3, 3] == 0.5


def test_missing_key_and_attribute_give_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    save_dataset(path, _build())
    with h5py.File(path, "r+") as h5:
        del h5.attrs["seed"]
    with pytest.raises(ValueError, match=r"missing root attribute\(s\) \['seed'\]"):
        load_dataset(path)
    save_dataset(path, _build())
    with h5py.File(path, "r+") as h5:
        del h5["grid"]
    with pytest.raises(ValueError, match="missing dataset 'grid'"):
        load_dataset(path)
    path.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        load_dataset(path)


def test_inconsistent_shapes_are_rejected(tmp_path: Path) -> None:
    ds = _build()
    with pytest.raises(ValueError, match="sample count"):
        make_dataset("darcy", "train", 0, ds.inputs, ds.targets[:3], ds.grid, CONFIG)
    with pytest.raises(ValueError, match=r"to match grid \(2, 8, 8\)"):
        make_dataset("darcy", "train", 0, ds.inputs, ds.targets, darcy_grid(8), CONFIG)
    with pytest.raises(ValueError, match="parameter 'p'"):
        make_dataset("darcy", "train", 0, ds.inputs, ds.targets, ds.grid, CONFIG, {"p": [1.0]})
    path = tmp_path / "d.h5"
    save_dataset(path, ds)
    with h5py.File(path, "r+") as h5:
        del h5["grid"]
        h5["grid"] = darcy_grid(8)
    with pytest.raises(ValueError, match="to match grid"):
        load_dataset(path, verify=False)


def test_failed_save_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    good = _build()
    save_dataset(path, good)
    bad = make_dataset(
        "darcy", "train", 7, good.inputs, good.targets, good.grid, CONFIG,
        parameters={"obj": np.array([object()] * 4, dtype=object)},
    )  # fmt: skip
    with pytest.raises(TypeError):
        save_dataset(path, bad)
    assert load_dataset(path).content_hash == good.content_hash
    assert [p.name for p in tmp_path.iterdir()] == ["d.h5"]


def test_cached_dataset_hits_and_rebuilds(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "darcy.h5"
    builds: list[dict] = []

    def builder(config: dict):
        def build() -> Dataset:
            builds.append(config)
            return _build(config)

        return build

    ds1, hit1 = cached_dataset(path, CONFIG, builder(CONFIG))
    ds2, hit2 = cached_dataset(path, CONFIG, builder(CONFIG))
    assert (hit1, hit2, len(builds)) == (False, True, 1)
    np.testing.assert_array_equal(ds1.targets, ds2.targets)
    changed = {**CONFIG, "seed": 8}
    ds3, hit3 = cached_dataset(path, changed, builder(changed))
    assert (hit3, len(builds), ds3.seed) == (False, 2, 8)
    assert not np.array_equal(ds3.inputs, ds1.inputs)
    # Tampered content under the right config: rebuilt, not used.
    with h5py.File(path, "r+") as h5:
        h5["inputs"][0, 0, 4, 4] = -1.0
    ds4, hit4 = cached_dataset(path, changed, builder(changed))
    assert (hit4, len(builds)) == (False, 3) and ds4.inputs.min() > 0
    # Garbage file: rebuilt.
    path.write_bytes(b"\x00" * 64)
    _, hit5 = cached_dataset(path, changed, builder(changed))
    assert (hit5, len(builds)) == (False, 4)
    assert cached_dataset(path, changed, builder(changed))[1] is True


def test_cached_dataset_rejects_build_for_other_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="config_hash"):
        cached_dataset(tmp_path / "d.h5", {**CONFIG, "seed": 99}, _build)
    assert not (tmp_path / "d.h5").exists()


def test_darcy_grid_coordinates() -> None:
    grid = darcy_grid(5)
    assert grid.shape == (2, 5, 5)
    i, j = 3, 1
    assert (grid[0, i, j], grid[1, i, j]) == (0.75, 0.25)


def test_features_on_solver_output() -> None:
    a, u = generate_darcy(6, 17, seed=4)
    feats = darcy_features(a[:, None], u[:, None])
    assert tuple(feats) == FEATURE_COLUMNS
    assert all(v.shape == (6,) for v in feats.values())
    assert np.all(feats["n_x"] == 17) and np.all(feats["n_y"] == 17)
    assert np.all(feats["bound_ratio"] <= 1.0) and np.all(feats["bound_ratio"] > 0.0)
    assert np.all(feats["residual"] < 1e-10)
    assert np.all(feats["boundary_abs_max"] == 0.0)
    # Independent per-sample references, row k belongs to sample k.
    for k in range(6):
        assert feats["u_rms"][k] == pytest.approx(np.sqrt(np.sum(u[k] ** 2) / 17**2))
        assert feats["a_high_fraction"][k] == pytest.approx(np.count_nonzero(a[k] == 12) / 289)
        assert feats["bound_ratio"][k] == pytest.approx(u[k].max() * a[k].min() / TORSION_MAX)


def test_features_flag_non_finite_samples_without_raising() -> None:
    a, u = generate_darcy(4, 9, seed=0)
    a, u = a.copy(), u.copy()
    u[1, 4, 4] = np.nan
    a[2, 0, 0] = np.inf  # a corner: no stencil uses it, but a_max must still show it
    a[3, 4, 4] = np.nan  # an interior node: poisons the residual too
    u[0, 0, 3] = 0.25  # a finite boundary violation on the clean sample
    feats = darcy_features(a, u)
    assert np.all(np.isfinite([feats[name][0] for name in FEATURE_COLUMNS]))
    assert feats["boundary_abs_max"][0] == 0.25
    for name in ("u_min", "u_max", "u_mean", "u_rms", "residual", "bound_ratio"):
        assert np.isnan(feats[name][1]), name
    assert np.isinf(feats["a_max"][2]) and np.isnan(feats["a_high_fraction"][2])
    for name in ("a_min", "a_mean", "a_high_fraction", "residual", "bound_ratio"):
        assert np.isnan(feats[name][3]), name
    assert np.isfinite(feats["u_max"][3])


def test_features_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"got \(2, 2, 9, 9\)"):
        darcy_features(np.ones((2, 2, 9, 9)), np.ones((2, 2, 9, 9)))
    with pytest.raises(ValueError, match="same shape"):
        darcy_features(np.ones((2, 9, 9)), np.ones((3, 9, 9)))
