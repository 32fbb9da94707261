"""Data import (PDEBench HDF5 and tensor-dict files), the data CLI, and the leakage suite."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from model.methods import MethodConfig, build_surrogate
from model.train import TrainConfig, train
from pdes.dataset import load_dataset
from pno.cli import app
from pno.importers import import_file
from tasks.train import load_tensors
from tasks.validate import DataValidationError, check_leakage, validate_split


@pytest.fixture(scope="module")
def darcy_arrays(tiny_darcy: Path) -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset(tiny_darcy)
    return ds.inputs[:, 0], ds.targets[:, 0]  # (n, N, N) each


def _pdebench_darcy(path: Path, a: np.ndarray, u: np.ndarray) -> Path:
    x = np.linspace(0, 1, a.shape[1])
    with h5py.File(path, "w") as h5:
        h5["tensor"] = u[:, None].astype(np.float32)  # PDEBench stores float32
        h5["nu"] = a.astype(np.float32)
        h5["x-coordinate"], h5["y-coordinate"] = x, x
    return path


def _round_trip(src: Path, tmp_path: Path, fno_cfg, pde: str | None = None) -> None:  # noqa: ANN001
    ds = import_file(src, pde)
    out = tmp_path / "imported.h5"
    from pdes.dataset import save_dataset

    save_dataset(out, ds)
    # float32 storage in the source: the residual is at float32 round-off, not 1e-8
    assert validate_split.fn(str(out), "imported", tmp_path / "gx",
                             {"residual_tol": 1e-5})["success"]
    x, y = load_tensors(out)
    model = build_surrogate(MethodConfig("pno-dropout", fno_cfg), seed=0)
    result = train(model, (x, y, x, y), TrainConfig(epochs=1, batch_size=6), tmp_path / "c.pt")
    assert np.isfinite(result.history[0]["train_loss"])


def test_pdebench_darcy_round_trip(darcy_arrays, tmp_path: Path, fno_cfg):
    src = _pdebench_darcy(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5", *darcy_arrays)
    _round_trip(src, tmp_path, fno_cfg)
    ds = import_file(src)  # the PDE is inferred from the keys
    assert ds.pde == "darcy" and ds.inputs.shape == (12, 1, 16, 16)
    np.testing.assert_allclose(ds.inputs[:, 0], darcy_arrays[0].astype(np.float32))


@pytest.mark.parametrize("keys", [("x", "y"), ("input", "output")])
def test_tensor_dict_round_trip(darcy_arrays, tmp_path: Path, fno_cfg, keys):
    a, u = darcy_arrays
    src = tmp_path / "pairs.pt"
    torch.save({keys[0]: torch.tensor(a, dtype=torch.float32),
                keys[1]: torch.tensor(u, dtype=torch.float32)}, src)
    _round_trip(src, tmp_path, fno_cfg, pde="darcy")


def test_files_that_are_not_what_they_claim(darcy_arrays, tmp_path: Path):
    a, u = darcy_arrays
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["data"] = a
    with pytest.raises(ValueError, match="no 'tensor' dataset, so not a PDEBench file"):
        import_file(tmp_path / "other.h5")
    with h5py.File(tmp_path / "bad_darcy.h5", "w") as h5:
        h5["tensor"], h5["nu"] = u[:, None], a[:, :8]
    with pytest.raises(ValueError, match=r"Darcy needs 'tensor' \(n, 1, X, Y\)"):
        import_file(tmp_path / "bad_darcy.h5")
    with pytest.raises(ValueError, match="looks like darcy, not burgers"):
        import_file(_pdebench_darcy(tmp_path / "d.h5", a, u), "burgers")
    torch.save({"a": torch.zeros(2, 4, 4)}, tmp_path / "keys.pt")
    with pytest.raises(ValueError, match=r"expected keys x/y or input/output, found \['a'\]"):
        import_file(tmp_path / "keys.pt", "darcy")
    with pytest.raises(ValueError, match="does not say which PDE"):
        import_file(tmp_path / "keys.pt")

    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("pickled code ran",))

    torch.save({"x": Payload(), "y": 1}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not a PyTorch file of plain tensors"):
        import_file(tmp_path / "evil.pt", "darcy")


def test_cli_generate_validate_and_import(darcy_arrays, tmp_path: Path):
    runner = CliRunner()
    out = tmp_path / "gen.h5"
    res = runner.invoke(app, ["data", "generate", "--pde", "darcy", "--n", "6", "--resolution",
                              "12", "--seed", "4", "--param", "high=10", "--out", str(out)])
    assert res.exit_code == 0, res.output
    ds = load_dataset(out)
    assert ds.inputs.shape == (6, 1, 12, 12) and set(np.unique(ds.inputs)) == {3.0, 10.0}
    assert runner.invoke(app, ["data", "validate", str(out)]).exit_code == 0
    # corrupt one solution value: validate exits 1 and names the expectation and the sample
    with h5py.File(out, "r+") as h5:
        h5["targets"][4, 0, 5, 5] = -1.0
    res = runner.invoke(app, ["data", "validate", str(out)])
    assert res.exit_code == 1
    assert "FAILED expect_column_values_to_be_between(u_min)" in res.output
    assert "samples [4]" in res.output
    bad = runner.invoke(app, ["data", "generate", "--pde", "darcy", "--n", "2", "--param",
                              "visc=1", "--out", str(tmp_path / "x.h5")])
    assert bad.exit_code == 2 and "visc" in bad.output
    src = _pdebench_darcy(tmp_path / "pdebench.h5", *darcy_arrays)
    res = runner.invoke(app, ["data", "import", str(src), "--out", str(tmp_path / "imp.h5"),
                              "--residual-tol", "1e-5"])
    assert res.exit_code == 0, res.output
    assert "11/11 expectations met" in res.output


def test_leakage_across_splits_is_rejected(tiny_darcy: Path, tmp_path: Path):
    feats = validate_split.fn(str(tiny_darcy), "train", tmp_path)["features"]
    table = pd.read_csv(feats, index_col="sample")
    test = table.iloc[[5, 3, 7]].reset_index(drop=True)  # test sample 1 is train sample 3
    test["input_hash"] = [test["input_hash"][0][::-1], test["input_hash"][1], "f" * 16]
    test_csv = tmp_path / "test.csv"
    test.to_csv(test_csv, index_label="sample")
    with pytest.raises(DataValidationError, match=r"2 samples share an input.*train\[3\].*"
                                                  r"test\[1\]"):
        check_leakage.fn({"train": feats, "test": str(test_csv)}, tmp_path / "gx")
    assert (tmp_path / "gx" / "gx_leakage.json").exists()
    clean = test.drop(index=1)
    clean.to_csv(test_csv, index_label="sample")
    assert check_leakage.fn({"train": feats, "test": str(test_csv)}, tmp_path)["success"]


def test_pdebench_burgers_round_trip(tmp_path: Path, fno_cfg):
    """A PDEBench-layout 1D file ('tensor' (n, n_t, X) with coordinates) built from our solver:
    imported with its viscosity, it passes the re-simulation expectations and trains."""
    from dataclasses import replace

    from pdes.burgers import generate_burgers

    out = generate_burgers(10, 64, seed=2, nu=0.1, t_final=1.0, n_frames=11)
    with h5py.File(tmp_path / "1D_Burgers_Sols_Nu0.1.hdf5", "w") as h5:
        h5["tensor"] = out["trajectory"][:, :, 0]
        h5["x-coordinate"] = out["grid"][0]
        h5["t-coordinate"] = out["times"]
    ds = import_file(tmp_path / "1D_Burgers_Sols_Nu0.1.hdf5", params={"nu": 0.1})
    assert ds.pde == "burgers" and ds.trajectory.shape == (10, 11, 1, 64)
    from pdes.dataset import save_dataset

    save_dataset(tmp_path / "b.h5", ds)
    assert validate_split.fn(str(tmp_path / "b.h5"), "imported", tmp_path / "gx")["success"]
    wrong_nu = import_file(tmp_path / "1D_Burgers_Sols_Nu0.1.hdf5", params={"nu": 0.05})
    save_dataset(tmp_path / "w.h5", wrong_nu)
    with pytest.raises(DataValidationError, match="resim_error"):
        validate_split.fn(str(tmp_path / "w.h5"), "imported", tmp_path / "gx")
    x, y = load_tensors(tmp_path / "b.h5")
    cfg1 = replace(fno_cfg, dim=1, padding=0)
    model = build_surrogate(MethodConfig("pno-dropout", cfg1), seed=0)
    result = train(model, (x, y, x, y), TrainConfig(epochs=1, batch_size=5), tmp_path / "c.pt")
    assert np.isfinite(result.history[0]["train_loss"])
