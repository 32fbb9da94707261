"""The training flow (the manual-training deployment): validated data, the chosen methods trained,
checkpoints in an MLflow run tagged pipeline=train."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.train import train_pipeline
from model.train import load_checkpoint
from pno.config import build_config
from tasks.tracking import list_artifacts


@pytest.mark.slow
def test_train_flow_logs_checkpoints_of_the_chosen_methods(prefect_server, tmp_path: Path):
    cfg = build_config("smoke", {"output_dir": str(tmp_path / "out"),
                                 "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                 "train": {"methods": ["fno"], "epochs": 1}})
    result = train_pipeline(cfg)
    assert list(result["checkpoints"]) == ["fno"]
    ckpt = load_checkpoint(Path(result["checkpoints"]["fno"]))
    assert ckpt["finished"] and ckpt["epoch"] == 1
    uri, run_id = result["tracking"]["tracking_uri"], result["tracking"]["run_id"]
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["pipeline"] == "train"
    assert "fno.train_loss" in run.data.metrics
    artifacts = list_artifacts(uri, run_id)
    assert f"checkpoints/{Path(result['checkpoints']['fno']).name}" in artifacts
    assert {"expectations/gx_train.json", "expectations/gx_val.json",
            "reference/features_train.csv"} <= set(artifacts)
    assert not any(a.startswith("expectations/gx_test") for a in artifacts)  # train, val only
