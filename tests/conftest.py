"""Shared fixtures: offline settings, one Prefect test server per session, tiny data and models."""

from __future__ import annotations

import os

from pno.cli import OFFLINE_ENV  # sets the offline switches before prefect/mlflow are imported

for _key, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from model.fno import FNOConfig  # noqa: E402
from model.methods import MethodConfig, Surrogate, build_surrogate  # noqa: E402
from model.train import TrainConfig, train  # noqa: E402
from pdes.darcy import generate_darcy  # noqa: E402
from pdes.dataset import darcy_grid, make_dataset, save_dataset  # noqa: E402

TINY_GEN = {"pde": "darcy", "split": "test", "n_samples": 12, "resolution": 16, "alpha": 2.0,
            "tau": 3.0, "high": 12.0, "low": 3.0, "forcing": 1.0, "seed": 3}


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never write into the working directory: run each one inside its tmp_path."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server for the whole session (about 20 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_darcy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean 12-sample Darcy dataset at 16x16, saved in the documented HDF5 layout."""
    a, u = generate_darcy(TINY_GEN["n_samples"], TINY_GEN["resolution"], TINY_GEN["seed"])
    ds = make_dataset("darcy", "test", TINY_GEN["seed"], a[:, None], u[:, None],
                      darcy_grid(TINY_GEN["resolution"]), TINY_GEN)
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    save_dataset(path, ds)
    return path


TINY_FNO = FNOConfig(width=8, modes=4, n_layers=2, padding=2, projection_width=8, dropout=0.2)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_darcy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PNO-D trained for one epoch on the tiny dataset (enough for plumbing tests)."""
    from tasks.train import load_tensors

    x, y = load_tensors(tiny_darcy)
    path = tmp_path_factory.mktemp("ckpt") / "pno.pt"
    train(tiny_method("pno-dropout"), (x, y, x, y), TrainConfig(epochs=1, batch_size=6), path)
    return path


def tiny_method(method: str, seed: int = 0, **kwargs: object) -> Surrogate:
    """Method ``method`` on the tiny backbone (``kwargs``: other MethodConfig fields)."""
    kwargs.setdefault("resolution", (16, 16))
    return build_surrogate(MethodConfig(method, TINY_FNO, **kwargs), seed=seed)


@pytest.fixture
def xy() -> tuple[torch.Tensor, torch.Tensor]:
    """Random Darcy-like tensors (B=6, 1, 16, 16) for model tests."""
    g = torch.Generator().manual_seed(0)
    x = torch.where(torch.randn(6, 1, 16, 16, generator=g) > 0, 12.0, 3.0)
    y = torch.rand(6, 1, 16, 16, generator=g) * 0.01
    return x, y


@pytest.fixture
def fno_cfg() -> FNOConfig:
    """The tiny PNO-D backbone used across tests."""
    return TINY_FNO
