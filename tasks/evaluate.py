"""Evaluation stage: scores on the test split and a picture of one test sample."""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
from prefect import task

from model.evaluate import score_model
from model.inference import Predictor
from model.train import build_model, load_checkpoint
from pno.config import PipelineConfig
from tasks import task_logger
from tasks.tracking import log_artifacts, log_metrics
from tasks.train import load_tensors

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402


def plot_sample(a: np.ndarray, truth: np.ndarray, mean: np.ndarray, std: np.ndarray | None,
                title: str, path: Path) -> Path:
    """Panels of input / truth / mean / std / |error| for one (H, W) test sample, or for a 1D
    (W,) sample input and truth with the mean and its +-2 std band."""
    if a.ndim == 1:
        return _plot_line(a, truth, mean, std, title, path)
    panels = [("input", a), ("truth", truth), ("predicted mean", mean)]
    if std is not None:
        panels.append(("predicted std", std))
    panels.append(("|error|", np.abs(mean - truth)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
    for ax, (name, field) in zip(axes, panels, strict=True):
        im = ax.imshow(field.T, origin="lower", extent=(0, 1, 0, 1), cmap="viridis")
        ax.set_title(name)
        fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, title, path)


def _save(fig: plt.Figure, title: str, path: Path) -> Path:
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_line(a: np.ndarray, truth: np.ndarray, mean: np.ndarray, std: np.ndarray | None,
               title: str, path: Path) -> Path:
    x = np.arange(a.shape[0]) / a.shape[0]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.4))
    ax0.plot(x, a, color="gray")
    ax0.set_title("input")
    ax1.plot(x, truth, "k", label="truth")
    ax1.plot(x, mean, "C0", label="predicted mean")
    if std is not None:
        ax1.fill_between(x, mean - 2 * std, mean + 2 * std, color="C0", alpha=0.3,
                         label="mean +- 2 std")
    ax1.legend(loc="best", fontsize=8)
    ax1.set_title(f"target, |error| max {np.abs(mean - truth).max():.3g}")
    return _save(fig, title, path)


@task(name="evaluate-model", task_run_name="evaluate-{method}")
def evaluate_model(method: str, checkpoint: str, test_path: str, cfg: PipelineConfig,
                   run_dir: Path, run_id: str) -> dict:
    """Score one trained method on the test split; metrics and plot go to MLflow."""
    torch.set_num_threads(cfg.torch_threads)
    model = build_model(load_checkpoint(Path(checkpoint)))
    x, y = load_tensors(test_path)
    t0 = time.perf_counter()
    scores = score_model(model, x, y, cfg.eval.n_samples, cfg.eval.level, cfg.eval.batch_size)
    seconds = time.perf_counter() - t0
    i = min(cfg.eval.plot_index, x.shape[0] - 1)
    fields = Predictor(model, x.shape[2:], cfg.eval.n_samples).predict(x[i:i + 1])
    std = fields["std"][0, 0] if "std" in fields else None
    plot = plot_sample(x[i, 0].numpy(), y[i, 0].numpy(), fields["mean"][0, 0], std,
                       f"{method}, test sample {i}", run_dir / "plots" / f"{method}_sample{i}.png")
    uri = cfg.resolved_tracking_uri()
    log_metrics(uri, run_id, {f"{method}.{k}": v for k, v in scores.items()})
    log_artifacts(uri, run_id, [plot], "plots")
    task_logger().info("%s: %s (%.1f s)", method,
                          ", ".join(f"{k}={v:.4g}" for k, v in scores.items()), seconds)
    return {"method": method, "scores": scores, "plot": str(plot), "seconds": seconds,
            "probabilistic": model.probabilistic}
