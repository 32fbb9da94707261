"""Drift stage: Evidently compares the current batch's feature table with the training split's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task

from tasks import task_logger


def drift_summary(snapshot: dict, columns: tuple[str, ...], drift_share: float) -> dict:
    """Per-column drift from an Evidently snapshot dict: score, method and threshold from its
    ValueDrift metrics, the drifted flag from its drift tests (status FAIL), and the verdict."""
    per_column = {}
    for metric in snapshot["metrics"]:
        conf = metric["config"]
        if conf.get("type", "").endswith("ValueDrift") and conf.get("column") in columns:
            per_column[conf["column"]] = {"score": float(metric["value"]),
                                          "method": conf["method"],
                                          "threshold": conf["threshold"]}
    for test in snapshot["tests"]:
        column = test["metric_config"]["params"].get("column")
        if column in per_column and test["metric_config"]["params"]["type"].endswith(
                "ValueDrift"):
            per_column[column]["drifted"] = test["status"] == "FAIL"
    missing = [c for c in columns if "drifted" not in per_column.get(c, {})]
    if missing:
        raise ValueError(f"Evidently report has no drift test for columns {missing}")
    share = sum(c["drifted"] for c in per_column.values()) / len(per_column)
    return {"columns": per_column, "drifted_share": share, "dataset_drift": share >= drift_share}


@task(name="detect-drift")
def detect_drift(reference_csv: str, current_csv: str, columns: tuple[str, ...],
                 drift_share: float, out_dir: Path) -> dict:
    """Evidently data-drift report of current vs reference features; HTML kept in ``out_dir``."""
    from evidently import DataDefinition, Dataset, Report  # slow import: only where needed
    from evidently.presets import DataDriftPreset

    cols = list(columns)
    ref = pd.read_csv(reference_csv, index_col="sample")[cols]
    cur = pd.read_csv(current_csv, index_col="sample")[cols]
    definition = DataDefinition(numerical_columns=cols)
    report = Report([DataDriftPreset(columns=cols, drift_share=drift_share)],
                    include_tests=True)
    snapshot = report.run(Dataset.from_pandas(cur, data_definition=definition),
                          Dataset.from_pandas(ref, data_definition=definition))
    out_dir.mkdir(parents=True, exist_ok=True)
    html = out_dir / "drift_report.html"
    snapshot.save_html(str(html))
    summary = drift_summary(snapshot.dict(), tuple(cols), drift_share)
    task_logger().info("drift: %d/%d features drifted (share %.2f) -> dataset drift %s",
                          sum(c["drifted"] for c in summary["columns"].values()), len(cols),
                          summary["drifted_share"], summary["dataset_drift"])
    return {**summary, "html": str(html), "n_reference": len(ref), "n_current": len(cur)}
