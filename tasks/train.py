"""Training stage: the FNO baseline (relative L2) and the PNO-D (energy score)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import torch
from prefect import task

from model.fno import FNO, FNOConfig
from model.train import TrainConfig, train
from pdes.dataset import load_dataset
from pno.config import PipelineConfig
from tasks import task_logger
from tasks.tracking import log_metrics

Method = Literal["fno", "pno-dropout"]


def load_tensors(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of a dataset as float32 tensors (B, C, H, W)."""
    ds = load_dataset(Path(path))
    return (torch.as_tensor(ds.inputs, dtype=torch.float32),
            torch.as_tensor(ds.targets, dtype=torch.float32))


def method_configs(method: Method, cfg: PipelineConfig, x: torch.Tensor,
                   y: torch.Tensor) -> tuple[FNOConfig, TrainConfig]:
    """Backbone and optimisation settings of a method for inputs ``x`` and targets ``y``
    (B, C, *spatial): same backbone, different loss and dropout."""
    m, t = cfg.model, cfg.train
    probabilistic = method == "pno-dropout"
    fno = FNOConfig(in_channels=x.shape[1], out_channels=y.shape[1], dim=x.ndim - 2,
                    width=m.width, modes=m.modes, n_layers=m.n_layers, padding=m.padding,
                    projection_width=m.projection_width,
                    dropout=m.dropout if probabilistic else 0.0)
    train_cfg = TrainConfig(epochs=t.pno_epochs if probabilistic else t.epochs,
                            batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay,
                            loss="energy" if probabilistic else "l2",
                            train_samples=t.train_samples, seed=t.seed)
    return fno, train_cfg


def checkpoint_path(checkpoint_dir: Path, method: str, fno_cfg: FNOConfig,
                    train_cfg: TrainConfig, data_hashes: list[str]) -> Path:
    """Checkpoint file named by everything that determines the training run, so that a rerun of a
    crashed pipeline resumes it and a rerun of a finished one reuses it."""
    key = json.dumps([method, fno_cfg.to_dict(), asdict(train_cfg), data_hashes], sort_keys=True)
    return checkpoint_dir / f"{method}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"


@task(name="train-model", task_run_name="train-{method}")
def train_model(method: Method, cfg: PipelineConfig, train_split: dict, val_split: dict,
                checkpoint_dir: Path, run_id: str) -> dict:
    """Train, resume or reuse one method (``*_split``: the data stage's records, with path and
    content hash); per-epoch losses go to the log and to MLflow."""
    logger = task_logger()
    torch.set_num_threads(cfg.torch_threads)
    x_tr, y_tr = load_tensors(train_split["path"])
    x_val, y_val = load_tensors(val_split["path"])
    fno_cfg, train_cfg = method_configs(method, cfg, x_tr, y_tr)
    ckpt = checkpoint_path(checkpoint_dir, method, fno_cfg, train_cfg,
                           [train_split["content_hash"], val_split["content_hash"]])
    tracking_uri = cfg.resolved_tracking_uri()

    def on_epoch(rec: dict) -> None:
        logger.info("%s epoch %d/%d: train %.4f, val %.4f, lr %.2e", method, rec["epoch"] + 1,
                    train_cfg.epochs, rec["train_loss"], rec["val_loss"], rec["lr"])
        log_metrics(tracking_uri, run_id, {f"{method}.train_loss": rec["train_loss"],
                                           f"{method}.val_loss": rec["val_loss"]},
                    step=rec["epoch"])

    t0 = time.perf_counter()
    result = train(FNO(fno_cfg, seed=train_cfg.seed), (x_tr, y_tr, x_val, y_val), train_cfg,
                   ckpt, on_epoch)
    seconds = time.perf_counter() - t0
    rate = result.epochs_run * x_tr.shape[0] / seconds if result.epochs_run else None
    if result.resumed_from_epoch:
        logger.info("%s: resumed from %s at epoch %d", method, ckpt, result.resumed_from_epoch)
    logger.info("%s: %d epochs trained in %.1f s (%s samples/s), best val %.4f at epoch %d",
                method, result.epochs_run, seconds, f"{rate:.1f}" if rate else "-",
                result.best_val, result.best_epoch + 1)
    return {"method": method, "checkpoint": str(ckpt), "seconds": seconds,
            "samples_per_second": rate, **asdict(result)}
