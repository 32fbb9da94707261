"""Training stage: the FNO baseline (relative L2) and the PNO-D (energy score)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import torch
from prefect import get_run_logger, task

from model.fno import FNO, FNOConfig
from model.train import TrainConfig, train
from pdes.dataset import load_dataset
from pno.config import PipelineConfig
from tasks.tracking import log_metrics

Method = Literal["fno", "pno-dropout"]


def load_tensors(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of a dataset as float32 tensors (B, C, H, W)."""
    ds = load_dataset(Path(path))
    return (torch.as_tensor(ds.inputs, dtype=torch.float32),
            torch.as_tensor(ds.targets, dtype=torch.float32))


def method_configs(method: Method, cfg: PipelineConfig) -> tuple[FNOConfig, TrainConfig]:
    """Backbone and optimisation settings of a method: same backbone, different loss/dropout."""
    m, t = cfg.model, cfg.train
    probabilistic = method == "pno-dropout"
    fno = FNOConfig(width=m.width, modes=m.modes, n_layers=m.n_layers, padding=m.padding,
                    projection_width=m.projection_width,
                    dropout=m.dropout if probabilistic else 0.0)
    train_cfg = TrainConfig(epochs=t.pno_epochs if probabilistic else t.epochs,
                            batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay,
                            loss="energy" if probabilistic else "l2",
                            train_samples=t.train_samples, seed=t.seed)
    return fno, train_cfg


@task(name="train-model", task_run_name="train-{method}")
def train_model(method: Method, cfg: PipelineConfig, train_path: str, val_path: str,
                run_dir: Path, run_id: str) -> dict:
    """Train (or resume) one method; per-epoch losses go to the log and to MLflow."""
    logger = get_run_logger()
    torch.set_num_threads(cfg.torch_threads)
    fno_cfg, train_cfg = method_configs(method, cfg)
    x_tr, y_tr = load_tensors(train_path)
    x_val, y_val = load_tensors(val_path)
    ckpt = run_dir / "checkpoints" / f"{method}.pt"
    tracking_uri = cfg.resolved_tracking_uri()

    def on_epoch(rec: dict) -> None:
        logger.info("%s epoch %d/%d: train %.4f, val %.4f, lr %.2e", method, rec["epoch"] + 1,
                    train_cfg.epochs, rec["train_loss"], rec["val_loss"], rec["lr"])
        log_metrics(tracking_uri, run_id, {f"{method}.train_loss": rec["train_loss"],
                                           f"{method}.val_loss": rec["val_loss"]},
                    step=rec["epoch"])

    t0 = time.perf_counter()
    result = train(FNO(fno_cfg), (x_tr, y_tr, x_val, y_val), train_cfg, ckpt, on_epoch)
    seconds = time.perf_counter() - t0
    logger.info("%s: %d epochs in %.1f s (%.1f samples/s), best val %.4f at epoch %d",
                method, result.epochs_run, seconds,
                result.epochs_run * x_tr.shape[0] / max(seconds, 1e-9), result.best_val,
                result.best_epoch + 1)
    return {"method": method, "checkpoint": str(ckpt), "seconds": seconds,
            "samples_per_second": result.epochs_run * x_tr.shape[0] / max(seconds, 1e-9),
            **asdict(result)}
