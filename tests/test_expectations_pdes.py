"""Each time-dependent PDE's expectation suite passes solver output and rejects each kind of
corruption, naming the expectation and the sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pdes.dataset import load_dataset, make_dataset, save_dataset
from pdes.registry import build_split, generating_config
from tasks.validate import DataValidationError, validate_split

SMALL = {
    "burgers": (32, {"t_final": 0.5, "n_frames": 2}),
    "ks": (32, {"t_burn": 10.0, "t_final": 1.0, "n_frames": 2}),
    "navier_stokes": (16, {"t_final": 0.5, "n_frames": 2}),
}


@pytest.fixture(scope="module", params=sorted(SMALL))
def clean(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    res, params = SMALL[request.param]
    ds = build_split(generating_config(request.param, "test", 6, res, 11, params))
    path = tmp_path_factory.mktemp(request.param) / "clean.h5"
    save_dataset(path, ds)
    return path


def _rewrite(src: Path, dst: Path, edit, parameters=None) -> Path:  # noqa: ANN001
    ds = load_dataset(src)
    x, y = ds.inputs.copy(), ds.targets.copy()
    edit(x, y)
    save_dataset(dst, make_dataset(ds.pde, ds.split, ds.seed, x, y, ds.grid, ds.config,
                                   parameters=parameters or ds.parameters))
    return dst


def test_clean_data_passes(clean: Path, tmp_path: Path):
    assert validate_split.fn(str(clean), "test", tmp_path)["success"]


def _nan(x, y):  # noqa: ANN001, ANN202
    y[2].flat[3] = np.nan


def _wrong_target(x, y):  # noqa: ANN001, ANN202
    y[4] *= 1.02


def _mean_shift(x, y):  # noqa: ANN001, ANN202
    y[1] += 0.01


@pytest.mark.parametrize(("edit", "column", "sample"), [
    (_nan, "nonfinite", 2), (_wrong_target, "resim_error", 4), (_mean_shift, "resim_error", 1),
])
def test_corruption_is_rejected(clean: Path, tmp_path: Path, edit, column: str, sample: int):
    bad = _rewrite(clean, tmp_path / "bad.h5", edit)
    with pytest.raises(DataValidationError, match=rf"\({column}\).*samples \[{sample}\]"):
        validate_split.fn(str(bad), "test", tmp_path / "gx")


def test_conservation_law_is_checked(clean: Path, tmp_path: Path):
    """A uniform shift of one target breaks conservation of the mean (Burgers, KS) or the zero
    mean of vorticity (Navier-Stokes)."""
    column = "out_mean" if load_dataset(clean).pde == "navier_stokes" else "mean_drift"
    bad = _rewrite(clean, tmp_path / "bad.h5", _mean_shift)
    with pytest.raises(DataValidationError, match=rf"\({column}\).*samples \[1\]"):
        validate_split.fn(str(bad), "test", tmp_path / "gx")


def test_parameter_outside_declared_range(clean: Path, tmp_path: Path):
    ds = load_dataset(clean)
    name = "length" if ds.pde == "ks" else "nu"
    params = {k: v.copy() for k, v in ds.parameters.items()}
    params[name][3] = 1e6
    bad = _rewrite(clean, tmp_path / "bad.h5", lambda x, y: None, parameters=params)
    with pytest.raises(DataValidationError, match=rf"\(param_{name}\).*samples \[3\]"):
        validate_split.fn(str(bad), "test", tmp_path / "gx")


def test_wrong_grid_is_rejected(clean: Path, tmp_path: Path):
    ds = load_dataset(clean)
    cut = (slice(None), slice(None)) + (slice(0, -2),) * (ds.inputs.ndim - 2)
    small = make_dataset(ds.pde, ds.split, ds.seed, ds.inputs[cut], ds.targets[cut],
                         ds.grid[(slice(None),) + cut[2:]], ds.config)
    save_dataset(tmp_path / "small.h5", small)
    with pytest.raises(DataValidationError, match=r"\(n_x\).*grid shape"):
        validate_split.fn(str(tmp_path / "small.h5"), "test", tmp_path / "gx")
