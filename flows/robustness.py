"""The robustness pipeline: data -> expectations -> train -> evaluate -> drift -> resilience ->
report, all logged to one MLflow run."""

from __future__ import annotations

import resource
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from prefect import flow
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from pno.config import PipelineConfig, RunnerConfig
from pno.runners import build_task_runner, forward_stop_signals, warn_if_other_runner
from tasks.data import generate_split
from tasks.drift import detect_drift
from tasks.evaluate import evaluate_model, plot_comparison
from tasks.promotion import compare_with_champion, register_model_version
from tasks.report import record_promotion, write_report
from tasks.resilience import attempts, guarded_predict, load_test, reload_checkpoint
from tasks.tracking import closing_run, log_model, log_to_run, start_run
from tasks.train import train_model
from tasks.validate import check_leakage, validate_split


def expected_artifacts(served: str) -> list[str]:
    """Artifact path prefixes the MLflow run must hold at the end (checked by the report)."""
    return ["expectations/gx_train.json", "reference/features_train.csv",
            "drift/drift_report.html", "plots/", f"checkpoints/{served}-"]


def _resilience(cfg: PipelineConfig, checkpoint: str, test_path: str, run_dir: Path) -> dict:
    """Retry against injected faults, an invalid input that must not be retried, and load."""
    r = cfg.resilience
    delays = exponential_backoff(backoff_factor=r.retry_delay_seconds)(r.retries) if r.retries \
        else 0
    ledgers = run_dir / "resilience"
    retry_state = reload_checkpoint.with_options(retries=r.retries, retry_delay_seconds=delays)(
        checkpoint, r.injected_faults, ledgers / "reload.attempts", return_state=True)
    bad = np.full((1, 1, *cfg.data.spatial_shape), np.nan, dtype=np.float32)
    guard_state = guarded_predict.with_options(retries=r.retries, retry_delay_seconds=delays)(
        checkpoint, bad, ledgers / "guard.attempts", return_state=True)
    load = load_test(checkpoint, test_path, r.load_threads,
                     r.load_requests, r.load_batch, r.load_samples, run_dir / "resilience")
    tries = attempts(ledgers / "reload.attempts")
    return {
        "retry": {"completed": retry_state.is_completed(), "attempts": tries,
                  "faults": r.injected_faults, "retries": r.retries,
                  "detail": f"{retry_state.name} after {tries} attempts"},
        "invalid_input": {"state": guard_state.type.value,
                          "attempts": attempts(ledgers / "guard.attempts"),
                          "message": guard_state.message},
        "load": load,
    }


# the fan-out goes through the task runner: threads one at a time unless pno run picks another
@flow(name="robustness-pipeline", log_prints=True,
      task_runner=build_task_runner(RunnerConfig()))
def robustness_pipeline(config: PipelineConfig | None = None) -> dict:
    """Run every stage on ``config`` (defaults when None); returns paths, run id and status."""
    cfg = config or PipelineConfig()
    warn_if_other_runner(cfg.runner)
    t0 = time.perf_counter()
    run_name = f"robustness-{datetime.now(UTC):%Y%m%d-%H%M%S}-{flow_run.name}"
    out = cfg.output_dir.resolve()
    run_dir = out / "runs" / run_name
    tracking = start_run(cfg, run_name)
    uri, run_id = tracking["tracking_uri"], tracking["run_id"]
    with closing_run(uri, run_id, run_dir):
        data = {s: generate_split(cfg.data, s, out / "data") for s in cfg.data.splits}
        validation = {s: validate_split(data[s]["path"], s, run_dir / "expectations")
                      for s in cfg.data.splits}
        leakage = check_leakage({s: v["features"] for s, v in validation.items()},
                                run_dir / "expectations")
        log_to_run(uri, run_id, {"expectations": [v["result"] for v in validation.values()]
                                 + [leakage["result"]],
                                 "reference": [validation["train"]["features"]]})  # for monitors
        with forward_stop_signals():  # SIGTERM/Ctrl-C reach training in the runner's threads
            training = [f.result() for f in [
                train_model.submit(m, cfg, data["train"], data["val"], out / "checkpoints",
                                   run_id, seed=seed)
                for m in cfg.train.methods for seed in cfg.train.seeds]]
        ckpt = {t["label"]: t["checkpoint"] for t in training}
        log_to_run(uri, run_id, {"checkpoints": list(ckpt.values())})
        eval_splits = {s: data[s]["path"] for s in ("calib", "test", "current", "rollout")
                       if s in data}
        evaluation = [f.result() for f in [
            evaluate_model.submit(label, path, eval_splits, cfg, run_dir, run_id)
            for label, path in ckpt.items()]]
        comparison_plots = plot_comparison(evaluation, cfg, run_dir, run_id)
        drift = detect_drift(validation["train"]["features"], validation["current"]["features"],
                             cfg.drift.columns_for(cfg.data.pde), cfg.drift.drift_share,
                             run_dir / "drift")
        log_to_run(uri, run_id, {"drift": [drift["html"]]},
                   {"drift.drifted_share": drift["drifted_share"]})
        served = cfg.train.label(cfg.train.served_method, cfg.train.seeds[0])
        resilience = _resilience(cfg, ckpt[served], data["test"]["path"], run_dir)
        log_to_run(uri, run_id, metrics={f"load.{k}": v for k, v in resilience["load"].items()})
        logged_model = log_model(uri, run_id, ckpt[served], cfg.data.spatial_shape)
        results = {
            "run_name": run_name, "run_id": run_id, "data": list(data.values()),
            "validation": list(validation.values()), "leakage": leakage, "training": training,
            "evaluation": evaluation, "comparison_plots": comparison_plots,
            "drift": drift, "resilience": resilience, "logged_model": logged_model,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "elapsed_seconds": time.perf_counter() - t0,
            "expected_artifacts": expected_artifacts(cfg.train.served_method),
            "served_method": served,
            "champion": compare_with_champion(uri, cfg.registered_model_name, served, evaluation,
                                              cfg.registry.max_rel_l2_vs_champion),
        }
        report = write_report(results, cfg, run_dir, uri)
        promotion = register_model_version(uri, run_id, logged_model, results["champion"],
                                           report, ckpt[served])
        report = record_promotion(report, promotion)
        log_to_run(uri, run_id, {"report": [report["json"], report["markdown"], report["csv"]]},
                   {"report.gates_passed": report["gates_passed"],
                    "report.gates_total": report["gates_total"],
                    "registry.version": int(promotion["version"]),
                    "registry.promoted": int(promotion["promoted"])})
    return {"report": report, "run_dir": str(run_dir), "tracking": tracking,
            "seconds": time.perf_counter() - t0}
