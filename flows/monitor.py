"""The drift monitor: new data files in a landing folder -> expectations (GX) -> drift against the
champion's training features (Evidently) -> the champion's scores -> one MLflow run
(tag pipeline=monitor); each file enters the ledger once its results are logged."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from pno.config import MonitorConfig
from tasks.drift import detect_drift
from tasks.monitor import (
    check_file,
    fetch_champion,
    file_metrics,
    record_processed,
    scan_landing,
    score_champion,
    start_monitor_run,
    summarize,
)
from tasks.tracking import closing_run, log_to_run


def _process(new: dict, cfg: MonitorConfig, champion: dict, uri: str, run_id: str,
             work: Path) -> dict:
    """One file: validate; when valid, drift and scores; log; then record it in the ledger."""
    key, out = new["key"], work / new["key"]
    checked = check_file(new["path"], key, cfg.pde, out)
    record = {"file": Path(new["path"]).name, "key": key, "sha256": new["sha256"], **checked}
    artifacts = [p for p in (checked["gx"], checked["features"]) if p]
    if checked["valid"]:
        drift = detect_drift(champion["reference"], checked["features"], cfg.drift_columns,
                             cfg.drift.drift_share, out)
        record["drift"] = {k: drift[k] for k in ("drifted_share", "dataset_drift", "columns")}
        record["scores"] = score_champion(champion["checkpoint"], new["path"], key,
                                          cfg.n_samples, cfg.level, cfg.torch_threads)
        artifacts.append(drift["html"])
    log_to_run(uri, run_id, {f"files/{key}": artifacts}, file_metrics(key, record))
    record_processed(cfg.ledger_path, new["sha256"], key,
                     {"file": record["file"], "status": "ok" if checked["valid"] else "invalid",
                      "failures": checked["failures"], "run_id": run_id,
                      "champion_version": champion["version"]})
    return record


@flow(name="drift-monitor", log_prints=True)
def drift_monitor(config: MonitorConfig | None = None) -> dict:
    """Process the files of ``config.landing_dir`` not yet in its ledger (defaults when None).
    Returns the records of processed files, the unreadable ones and the MLflow run id (None when
    there was nothing to do or no champion yet: the files then wait for a later run)."""
    cfg = config or MonitorConfig()
    uri, name = cfg.resolved_tracking_uri(), cfg.registered_model_name
    scan = scan_landing(cfg.landing_dir, cfg.ledger_path)
    result = {"processed": [], "unreadable": scan["unreadable"], "run_id": None,
              "champion_version": None, "already_processed": scan["seen"]}
    if not scan["new"]:
        return result
    run_name = f"monitor-{datetime.now(UTC):%Y%m%d-%H%M%S}-{flow_run.name}"
    work = cfg.output_dir.resolve() / run_name
    champion = fetch_champion(uri, name, cfg.pde, work / "champion")
    if champion is None:
        print(f"no champion of {name} in {uri} yet: {len(scan['new'])} files wait")
        return result
    run_id = start_monitor_run(uri, cfg.experiment, run_name,
                               {"model_name": name, "champion_version": champion["version"]})
    with closing_run(uri, run_id):
        records = [_process(f, cfg, champion, uri, run_id, work) for f in scan["new"]]
        summary = summarize(records, scan["unreadable"], work)
        log_to_run(uri, run_id, {"summary": [summary["summary"]]}, summary["metrics"])
    print(f"{len(records)} files processed against {name} v{champion['version']}; dataset "
          f"drift in {summary['drifted'] or 'none'}; MLflow run {run_id}")
    return {**result, "processed": records, "run_id": run_id,
            "champion_version": champion["version"]}
