"""Report logic: stage completion is read from the stages' outputs, not declared."""

from __future__ import annotations

from pathlib import Path

from tasks.report import stage_evidence


def _results(tmp_path: Path) -> dict:
    files = {name: tmp_path / name for name in ("data.h5", "gx.json", "ckpt.pt", "drift.html")}
    for f in files.values():
        f.write_text("x")
    return {
        "data": [{"split": "test", "path": str(files["data.h5"]), "n_samples": 4}],
        "validation": [{"success": True, "result": str(files["gx.json"])}],
        "leakage": {"success": True},
        "training": [{"checkpoint": str(files["ckpt.pt"])}],
        "evaluation": [{"scores": {"n": 4}}],
        "drift": {"html": str(files["drift.html"]), "columns": {"u_max": {}}},
        "resilience": {"load": {"requests": 10, "bad_total": 9}},
    }


def test_every_stage_with_outputs_counts(tmp_path: Path):
    assert all(stage_evidence(_results(tmp_path)).values())


def test_missing_outputs_fail_their_stage(tmp_path: Path):
    r = _results(tmp_path)
    Path(r["training"][0]["checkpoint"]).unlink()
    r["evaluation"][0]["scores"]["n"] = 3  # scored fewer samples than the test split holds
    done = stage_evidence(r)
    assert not done["train"] and not done["evaluate"]
    assert done["data"] and done["drift"]
