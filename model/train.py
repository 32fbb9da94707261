"""Training loop for the FNO baseline (relative L2) and the PNO-D (energy score).

The loop is a plain function built from small parts (:func:`cosine_lr`, :func:`train_one_epoch`,
:func:`evaluate_loss`); logging happens in the ``on_epoch`` callback so that tracking code stays out
of this package. Every epoch ends with an atomic checkpoint holding everything needed to resume
exactly: model and optimiser state, the epoch, the best weights, the history and the RNG state.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from model.fno import FNO, FNOConfig
from model.metrics import energy_score, relative_l2

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; ``loss`` is ``"l2"`` (relative L2) or ``"energy"`` (fair ES)."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_factor: float = 0.05
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    loss: str = "l2"
    train_samples: int = 3  # samples per input for the energy score (Bulte et al. use 3)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in ("l2", "energy"):
            raise ValueError(f"loss must be one of ('l2', 'energy'), got {self.loss!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, "
                             f"{self.batch_size}")
        if self.loss == "energy" and self.train_samples < 2:
            raise ValueError(f"the energy score needs train_samples >= 2, got {self.train_samples}")


@dataclass
class TrainResult:
    """What a finished training run returns (JSON-friendly apart from nothing)."""

    epochs_run: int
    resumed_from_epoch: int
    best_epoch: int
    best_val: float
    history: list[dict] = field(default_factory=list)


def cosine_lr(epoch: int, cfg: TrainConfig) -> float:
    """Learning rate for ``epoch`` (0-based): cosine decay from ``lr`` to ``lr*min_lr_factor``."""
    t = epoch / max(cfg.epochs - 1, 1)
    floor = cfg.lr * cfg.min_lr_factor
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * t))


def loss_fn(model: FNO, x: Tensor, y: Tensor, cfg: TrainConfig,
            generator: torch.Generator | None = None) -> Tensor:
    """Mean training loss of a batch: relative L2, or the fair energy score in units of out_std."""
    if cfg.loss == "l2":
        return relative_l2(model(x), y).mean()
    samples = model.sample(x, cfg.train_samples, generator=generator)
    return energy_score(samples, y, fair=True).mean() / model.out_std


def train_one_epoch(model: FNO, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
                    cfg: TrainConfig, epoch: int) -> float:
    """One pass over (x, y) in shuffled batches (global torch RNG); returns the mean batch loss."""
    model.train()
    perm = torch.randperm(x.shape[0])
    total, batches = 0.0, 0
    for start in range(0, x.shape[0], cfg.batch_size):
        idx = perm[start:start + cfg.batch_size]
        loss = loss_fn(model, x[idx], y[idx], cfg)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {loss.item()} at epoch {epoch}, "
                                     f"batch {batches}; the last good checkpoint is kept")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        total += loss.item()
        batches += 1
    return total / max(batches, 1)


@torch.no_grad()
def evaluate_loss(model: FNO, x: Tensor, y: Tensor, cfg: TrainConfig) -> float:
    """Validation loss (same criterion as training; sampling from a fixed-seed generator, so it
    neither varies between calls nor consumes the global RNG that training resumes from)."""
    model.eval()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    losses = [loss_fn(model, x[i:i + cfg.batch_size], y[i:i + cfg.batch_size], cfg, gen).item()
              * min(cfg.batch_size, x.shape[0] - i) for i in range(0, x.shape[0], cfg.batch_size)]
    return sum(losses) / x.shape[0]


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` atomically: a crash mid-write never leaves a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code from the file runs)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def build_model(checkpoint: dict, best: bool = True) -> FNO:
    """Rebuild the FNO stored in a checkpoint (best validation weights by default)."""
    model = FNO(FNOConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["best_state" if best else "model_state"])
    model.eval()
    return model


def train(model: FNO, data: tuple[Tensor, Tensor, Tensor, Tensor], cfg: TrainConfig,
          checkpoint_path: Path,
          on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``model`` on ``data = (x_train, y_train, x_val, y_val)``, resuming when
    ``checkpoint_path`` holds a checkpoint of the same model and training config.

    Normalisation statistics come from the training split. ``on_epoch`` receives a dict with
    epoch, train_loss, val_loss, lr and best_val after each epoch (and its checkpoint).
    """
    x_tr, y_tr, x_val, y_val = data
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = 0, []
    best_val, best_epoch, best_state = math.inf, -1, None
    if checkpoint_path.exists():
        ckpt = load_checkpoint(checkpoint_path)
        if (ckpt.get("model_config") != model.config.to_dict()
                or ckpt.get("train_config") != asdict(cfg)):
            raise ValueError(f"checkpoint {checkpoint_path} was written for another model or "
                             "training config; move it away or use another output folder")
        model.load_state_dict(ckpt["model_state"])
        opt.load_state_dict(ckpt["optimizer_state"])
        torch.set_rng_state(ckpt["torch_rng"])
        start, history = ckpt["epoch"], list(ckpt["history"])
        best_val, best_epoch, best_state = ckpt["best_val"], ckpt["best_epoch"], ckpt["best_state"]
    else:
        torch.manual_seed(cfg.seed)
        model.set_normalization(x_tr, y_tr)
    resumed_from = start
    for epoch in range(start, cfg.epochs):
        lr = cosine_lr(epoch, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        train_loss = train_one_epoch(model, opt, x_tr, y_tr, cfg, epoch)
        val_loss = evaluate_loss(model, x_val, y_val, cfg)
        if val_loss < best_val:
            best_val, best_epoch = val_loss, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": lr,
                  "best_val": best_val}
        history.append(record)
        save_checkpoint(checkpoint_path, {
            "format": CHECKPOINT_FORMAT, "model_config": model.config.to_dict(),
            "train_config": asdict(cfg), "model_state": model.state_dict(),
            "optimizer_state": opt.state_dict(), "epoch": epoch + 1, "history": history,
            "best_val": best_val, "best_epoch": best_epoch, "best_state": best_state,
            "torch_rng": torch.get_rng_state(),
        })
        if on_epoch is not None:
            on_epoch(record)
    return TrainResult(epochs_run=cfg.epochs - resumed_from, resumed_from_epoch=resumed_from,
                       best_epoch=best_epoch, best_val=best_val, history=history)
