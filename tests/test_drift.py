"""Evidently drift detection on feature tables: a shifted batch is flagged, a same-distribution
batch is not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.drift import detect_drift

COLUMNS = ("a_mean", "u_max")


def _table(path: Path, rng: np.random.Generator, n: int, shift: float) -> str:
    df = pd.DataFrame({"a_mean": rng.normal(7.5, 0.5, n) + shift,
                       "u_max": rng.normal(0.01, 0.001, n)})
    df.to_csv(path, index_label="sample")
    return str(path)


def test_shift_in_one_feature_is_flagged(tmp_path: Path):
    rng = np.random.default_rng(0)
    ref = _table(tmp_path / "ref.csv", rng, 300, 0.0)
    cur = _table(tmp_path / "cur.csv", rng, 100, 1.0)
    out = detect_drift.fn(ref, cur, COLUMNS, 0.5, tmp_path)
    assert out["columns"]["a_mean"]["drifted"] is True
    assert out["columns"]["u_max"]["drifted"] is False
    assert out["columns"]["a_mean"]["method"].startswith("K-S")
    assert out["columns"]["a_mean"]["score"] < 1e-6  # a p-value for a 2-sigma shift
    assert out["drifted_share"] == 0.5 and out["dataset_drift"] is True
    assert Path(out["html"]).stat().st_size > 10_000


def test_same_distribution_is_not_flagged(tmp_path: Path):
    rng = np.random.default_rng(1)
    ref = _table(tmp_path / "ref.csv", rng, 300, 0.0)
    cur = _table(tmp_path / "cur.csv", rng, 100, 0.0)
    out = detect_drift.fn(ref, cur, COLUMNS, 0.5, tmp_path)
    assert out["dataset_drift"] is False
    assert all(not c["drifted"] for c in out["columns"].values())
