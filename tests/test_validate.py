"""The Darcy expectation suite accepts solver output and rejects corrupted data, naming the failed
expectations and the offending samples; the GX result is kept either way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pdes.dataset import darcy_grid, load_dataset, make_dataset, save_dataset
from tasks.validate import DataValidationError, validate_split


def corrupt(src: Path, dst: Path, edit) -> Path:  # noqa: ANN001
    """Copy the dataset at ``src`` to ``dst`` after ``edit(a, u)`` modified its arrays in place."""
    ds = load_dataset(src)
    a, u = ds.inputs.copy(), ds.targets.copy()
    edit(a, u)
    save_dataset(dst, make_dataset("darcy", ds.split, ds.seed, a, u, ds.grid, ds.config))
    return dst


def failed_types(result_path: Path) -> dict[str, list[int]]:
    result = json.loads(result_path.read_text())
    return {f"{r['expectation_config']['type']}:{r['expectation_config']['kwargs'].get('column')}":
            r["result"].get("unexpected_index_list") for r in result["results"]
            if not r["success"]}


def test_clean_data_passes(tiny_darcy: Path, tmp_path: Path):
    out = validate_split.fn(str(tiny_darcy), "test", tmp_path)
    assert out["success"] and out["successful"] == out["evaluated"] == 11
    assert Path(out["result"]).exists() and Path(out["features"]).exists()


def _nan(a, u):  # noqa: ANN001, ANN202
    u[3, 0, 5, 5] = np.nan


def _out_of_bounds(a, u):  # noqa: ANN001, ANN202
    a[2, 0, 4:8, 4:8] = 50.0  # coefficient outside the declared {3, 12}


def _not_a_solution(a, u):  # noqa: ANN001, ANN202
    u[1] *= 1.05  # 5% off: no longer satisfies the discrete PDE


def _negative(a, u):  # noqa: ANN001, ANN202
    u[7, 0, 8, 8] = -1e-3  # breaks the maximum principle


@pytest.mark.parametrize(("edit", "expected"), [
    (_nan, {"expect_column_values_to_be_between:nonfinite": [3]}),
    (_out_of_bounds, {"expect_column_values_to_be_between:a_max": [2]}),
    (_not_a_solution, {"expect_column_values_to_be_between:residual": [1]}),
    (_negative, {"expect_column_values_to_be_between:u_min": [7]}),
])
def test_corruption_is_rejected_with_names_and_samples(tiny_darcy: Path, tmp_path: Path, edit,
                                                       expected):
    path = corrupt(tiny_darcy, tmp_path / "bad.h5", edit)
    with pytest.raises(DataValidationError) as err:
        validate_split.fn(str(path), "test", tmp_path / "gx")
    failed = failed_types(tmp_path / "gx" / "gx_test.json")  # the result was kept
    for key, samples in expected.items():
        assert failed[key] == samples
        assert key.split(":")[1] in str(err.value)
        assert f"samples [{', '.join(map(str, samples))}]" in str(err.value)


def test_wrong_shape_is_rejected(tiny_darcy: Path, tmp_path: Path):
    """Arrays on a 12x12 grid in a file that declares resolution 16."""
    ds = load_dataset(tiny_darcy)
    small = make_dataset("darcy", "test", ds.seed, ds.inputs[:, :, :12, :12],
                         ds.targets[:, :, :12, :12], darcy_grid(12), ds.config)
    save_dataset(tmp_path / "small.h5", small)
    with pytest.raises(DataValidationError, match=r"n_x.*grid shape"):
        validate_split.fn(str(tmp_path / "small.h5"), "test", tmp_path / "gx")


def test_truncated_file_is_rejected(tiny_darcy: Path, tmp_path: Path):
    ds = load_dataset(tiny_darcy)
    short = make_dataset("darcy", "test", ds.seed, ds.inputs[:5], ds.targets[:5], ds.grid,
                         ds.config)  # config still says 12 samples
    save_dataset(tmp_path / "short.h5", short)
    with pytest.raises(DataValidationError, match="expect_table_row_count_to_equal"):
        validate_split.fn(str(tmp_path / "short.h5"), "test", tmp_path / "gx")
