"""Evaluation stage: scores, conformal calibration, variance decomposition and rollouts of each
trained method, and the pictures that compare them."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from prefect import task

from model.evaluate import EvalSettings, evaluate_method
from model.train import build_model, load_checkpoint
from pdes.dataset import load_dataset
from pno.config import PipelineConfig
from pno.runtime import keep_freed_memory
from tasks import task_logger
from tasks.plots import plot_decomposition, plot_pit, plot_reliability, plot_rollout, plot_sample
from tasks.tracking import log_artifacts, log_metrics
from tasks.train import load_tensors


def load_rollout(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial states (N, C, *spatial) and frames 1..K (N, K, C, *spatial) of a rollout split."""
    traj = torch.as_tensor(load_dataset(Path(path)).trajectory, dtype=torch.float32)
    return traj[:, 0], traj[:, 1:]


def _numpy(fields: dict) -> dict:
    return {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in fields.items()}


@task(name="evaluate-model", task_run_name="evaluate-{label}")
def evaluate_model(label: str, checkpoint: str, splits: dict[str, str], cfg: PipelineConfig,
                   run_dir: Path, run_id: str) -> dict:
    """Evaluate one trained method (``splits``: calib, test, current and optionally rollout
    paths); its metrics and pictures go to MLflow."""
    torch.set_num_threads(cfg.torch_threads)
    keep_freed_memory()  # glibc: no page-fault storm per step (pno/runtime.py)
    model = build_model(load_checkpoint(Path(checkpoint)))
    settings = EvalSettings(**cfg.eval.model_dump(), seed=cfg.data.seed)
    data = {s: load_tensors(splits[s]) for s in ("calib", "test", "current")}
    rollout = load_rollout(splits["rollout"]) if "rollout" in splits else None
    t0 = time.perf_counter()
    res = evaluate_method(model, data, rollout, settings)
    seconds = time.perf_counter() - t0
    fields, maps = _numpy(res.pop("fields")), res["decomposition"].get("available")
    plots = [plot_sample(fields, f"{label}, test sample {settings.plot_index}",
                         run_dir / "plots" / f"{label}_sample.png")]
    if maps:
        plots.append(plot_decomposition(_numpy(fields["decomposition"]),
                                        f"{label}: variance decomposition, test sample",
                                        run_dir / "plots" / f"{label}_decomposition.png"))
    after = res["calibration"]["test"]["after"]
    metrics = {**res["scores"], "calibrated_coverage": after["point_coverage"],
               "calibrated_width": after["point_width"],
               "calibrated_function_coverage": after["function_coverage"]}
    uri = cfg.resolved_tracking_uri()
    log_metrics(uri, run_id, {f"{label}.{k}": v for k, v in metrics.items()})
    log_artifacts(uri, run_id, plots, "plots")
    task_logger().info("%s: %s (%.1f s)", label,
                       ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), seconds)
    return {"label": label, "method": model.method, "checkpoint": checkpoint, **res,
            "plots": [str(p) for p in plots], "seconds": seconds}


@task(name="plot-comparison")
def plot_comparison(evaluation: list[dict], cfg: PipelineConfig, run_dir: Path,
                    run_id: str) -> list[str]:
    """Reliability diagram, PIT histograms and rollout curves of all methods in one figure each."""
    out = run_dir / "plots"
    level = cfg.eval.level
    plots = [plot_reliability({e["label"]: e["calibration"]["curve"] for e in evaluation},
                              level, out / "reliability.png")]
    pit = {e["label"]: e["curves"]["pit_hist"] for e in evaluation if e["curves"]}
    if pit:
        plots.append(plot_pit(pit, out / "pit.png"))
    rollouts = {e["label"]: e["rollout"] for e in evaluation if e["rollout"]}
    if rollouts:
        plots.append(plot_rollout(rollouts, level, out / "rollout.png"))
    log_artifacts(cfg.resolved_tracking_uri(), run_id, plots, "plots")
    return [str(p) for p in plots]
