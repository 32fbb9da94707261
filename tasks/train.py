"""Training stage: any method of the zoo (``model.methods``), resumable, with progress shown."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from prefect import task
from tqdm import tqdm

from model.fno import FNOConfig
from model.methods import MethodConfig, build_surrogate
from model.train import TrainConfig, TrainingInterrupted, train
from pdes.dataset import load_dataset
from pno.config import ENERGY_METHODS, PipelineConfig
from pno.runtime import keep_freed_memory
from tasks import task_logger
from tasks.tracking import log_metrics


def load_tensors(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of a dataset as float32 tensors (B, C, H, W)."""
    ds = load_dataset(Path(path))
    return (torch.as_tensor(ds.inputs, dtype=torch.float32),
            torch.as_tensor(ds.targets, dtype=torch.float32))


def method_configs(method: str, cfg: PipelineConfig, x: torch.Tensor, y: torch.Tensor,
                   seed: int | None = None) -> tuple[MethodConfig, TrainConfig]:
    """Network and optimisation settings of ``method`` for inputs ``x`` and targets ``y``
    (B, C, *spatial): one backbone for all FNO-based methods, each with its own loss;
    ``seed`` (default ``train.seed``) seeds the initialisation and the batches."""
    m, t = cfg.model, cfg.train
    backbone = FNOConfig(in_channels=x.shape[1], out_channels=y.shape[1], dim=x.ndim - 2,
                         width=m.width, modes=m.modes, n_layers=m.n_layers, padding=m.padding,
                         projection_width=m.projection_width, dropout=m.dropout)
    method_cfg = MethodConfig(
        method=method, backbone=backbone, train_samples=t.train_samples,
        ensemble_size=m.ensemble_size, ensemble_member=m.ensemble_member,
        kl_weight=m.kl_weight, prior_std=m.prior_std,
        deeponet_basis=m.deeponet_basis, deeponet_width=m.deeponet_width,
        deeponet_layers=m.deeponet_layers, resolution=tuple(x.shape[2:]))
    train_cfg = TrainConfig(epochs=t.pno_epochs if method in ENERGY_METHODS else t.epochs,
                            batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay,
                            grad_clip=t.grad_clip, plateau_patience=t.plateau_patience,
                            early_stop_patience=t.early_stop_patience,
                            seed=t.seed if seed is None else seed)
    return method_cfg, train_cfg


def checkpoint_path(checkpoint_dir: Path, method_cfg: MethodConfig, train_cfg: TrainConfig,
                    data_hashes: list[str]) -> Path:
    """Checkpoint file named by everything that determines the training run, so that a rerun of a
    crashed pipeline resumes it and a rerun of a finished one reuses it."""
    method = method_cfg.method
    key = json.dumps([method_cfg.to_dict(), asdict(train_cfg), data_hashes], sort_keys=True)
    return checkpoint_dir / f"{method}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"


class Progress:
    """Per-batch progress bar (epoch, loss, ETA) on a terminal; one log line per epoch always."""

    def __init__(self, method: str, epochs: int) -> None:
        self.method, self.epochs = method, epochs
        self.logger = task_logger()
        self.bar: tqdm | None = None
        self.enabled = sys.stderr.isatty()

    def batch(self, epoch: int, batch: int, n_batches: int, loss: float) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = tqdm(total=self.epochs * n_batches, initial=epoch * n_batches + batch,
                            desc=self.method, unit="batch", dynamic_ncols=True, leave=False)
        self.bar.update(1)
        self.bar.set_postfix_str(f"epoch {epoch + 1}/{self.epochs} loss {loss:.4g}")

    def epoch(self, rec: dict) -> None:
        self.logger.info("%s epoch %d/%d: train %.4g, val %.4g, lr %.2e, %.1f s", self.method,
                         rec["epoch"] + 1, self.epochs, rec["train_loss"], rec["val_loss"],
                         rec["lr"], rec["seconds"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _not_retryable(task, task_run, state) -> bool:  # noqa: ANN001 (Prefect's hook signature)
    """Retry only I/O errors; a NaN loss, an interruption or a bug fails at once."""
    try:
        state.result()
    except OSError:
        return True
    except BaseException:
        return False
    return False


@task(name="train-model", task_run_name="train-{method}-seed{seed}", retries=1,
      retry_condition_fn=_not_retryable)
def train_model(method: str, cfg: PipelineConfig, train_split: dict, val_split: dict,
                checkpoint_dir: Path, run_id: str, seed: int | None = None) -> dict:
    """Train, resume or reuse one method with one seed (``*_split``: the data stage's records,
    with path and content hash; ``seed`` default ``train.seed``); per-epoch losses go to the log
    and to MLflow."""
    logger = task_logger()
    seed = cfg.train.seed if seed is None else seed
    torch.set_num_threads(cfg.torch_threads)
    keep_freed_memory()  # glibc: no page-fault storm per step (pno/runtime.py)
    x_tr, y_tr = load_tensors(train_split["path"])
    x_val, y_val = load_tensors(val_split["path"])
    method_cfg, train_cfg = method_configs(method, cfg, x_tr, y_tr, seed)
    label = cfg.train.label(method, seed)
    ckpt = checkpoint_path(checkpoint_dir, method_cfg, train_cfg,
                           [train_split["content_hash"], val_split["content_hash"]])
    tracking_uri = cfg.resolved_tracking_uri()
    progress = Progress(label, train_cfg.epochs)

    def on_epoch(rec: dict) -> None:
        progress.epoch(rec)
        log_metrics(tracking_uri, run_id, {f"{label}.train_loss": rec["train_loss"],
                                           f"{label}.val_loss": rec["val_loss"],
                                           f"{label}.lr": rec["lr"]}, step=rec["epoch"])

    t0 = time.perf_counter()
    try:
        result = train(build_surrogate(method_cfg, seed=train_cfg.seed),
                       (x_tr, y_tr, x_val, y_val), train_cfg, ckpt, on_epoch, progress.batch)
    except TrainingInterrupted as e:
        logger.warning("%s: %s", label, e)
        raise
    finally:
        progress.close()
    seconds = time.perf_counter() - t0
    rate = result.epochs_run * x_tr.shape[0] / seconds if result.epochs_run else None
    if result.resumed_from_epoch:
        logger.info("%s: resumed from %s at epoch %d", label, ckpt, result.resumed_from_epoch)
    logger.info("%s: %d epochs trained in %.1f s (%s samples/s)%s, best val %.4g at epoch %d",
                label, result.epochs_run, seconds, f"{rate:.1f}" if rate else "-",
                ", stopped early" if result.stopped_early else "", result.best_val,
                result.best_epoch + 1)
    return {"method": method, "label": label, "seed": seed, "checkpoint": str(ckpt),
            "seconds": seconds, "samples_per_second": rate, **asdict(result)}
