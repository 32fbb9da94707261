"""The training pipeline: data -> expectations -> train the chosen methods, with the checkpoints
logged to one MLflow run (tag pipeline=train). No evaluation, report or registration: that is
the robustness pipeline's job; checkpoints are shared with it (same names), so a robustness run
on the same configuration reuses them."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import flow
from prefect.runtime import flow_run

from pno.config import PipelineConfig
from tasks.data import generate_split
from tasks.tracking import closing_run, log_to_run, start_run
from tasks.train import train_model
from tasks.validate import validate_split

TRAIN_SPLITS = ("train", "val")


@flow(name="train-pipeline", log_prints=True)
def train_pipeline(config: PipelineConfig | None = None) -> dict:
    """Generate and validate the train and val splits of ``config`` (defaults when None), then
    train every method of ``config.train.methods`` for every seed; returns checkpoints and run."""
    cfg = config or PipelineConfig()
    t0 = time.perf_counter()
    run_name = f"train-{datetime.now(UTC):%Y%m%d-%H%M%S}-{flow_run.name}"
    out = cfg.output_dir.resolve()
    run_dir = out / "runs" / run_name
    tracking = start_run(cfg, run_name, pipeline="train")
    uri, run_id = tracking["tracking_uri"], tracking["run_id"]
    with closing_run(uri, run_id, run_dir):
        data = {s: generate_split(cfg.data, s, out / "data") for s in TRAIN_SPLITS}
        validation = {s: validate_split(data[s]["path"], s, run_dir / "expectations")
                      for s in TRAIN_SPLITS}
        log_to_run(uri, run_id, {"expectations": [v["result"] for v in validation.values()],
                                 "reference": [validation["train"]["features"]]})
        training = [train_model(m, cfg, data["train"], data["val"], out / "checkpoints", run_id,
                                seed=seed) for m in cfg.train.methods for seed in cfg.train.seeds]
        log_to_run(uri, run_id, {"checkpoints": [t["checkpoint"] for t in training]})
    return {"checkpoints": {t["label"]: t["checkpoint"] for t in training},
            "tracking": tracking, "seconds": time.perf_counter() - t0}
