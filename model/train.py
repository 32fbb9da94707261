"""One training function for every method of the zoo (:mod:`model.methods`).

Built from small parts: AdamW, ``ReduceLROnPlateau`` on the validation loss, gradient clipping,
early stopping, and ``on_batch`` / ``on_epoch`` callbacks (so logging and progress bars live in
the caller, not here). The loss is the method's own ``training_loss``.

Nothing is lost on failure:

- every epoch ends with an atomic checkpoint (temporary file, then rename) holding the method and
  training configs, weights, optimiser, scheduler, epoch, best weights, history and the RNG state,
  loaded back with ``weights_only=True``; a run killed at any point (SIGKILL included) resumes
  from it and reaches the same weights as an uninterrupted run;
- SIGTERM or Ctrl-C (in the main thread, or forwarded to worker threads by
  :class:`ForwardStopSignals`) finish the current batch, checkpoint mid-epoch (the epoch's
  shuffle and position included) and raise :class:`TrainingInterrupted`; a second Ctrl-C stops
  at once;
- a non-finite loss raises ``FloatingPointError`` naming the epoch and batch; the last good
  checkpoint is kept, and the error is not something to retry.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

import torch
from torch import Tensor

from model.methods import Surrogate, build_surrogate

CHECKPOINT_FORMAT = 2


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by all methods (the loss belongs to the method)."""

    epochs: int = 20  # at most; early stopping may end sooner
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    plateau_factor: float = 0.5  # ReduceLROnPlateau: lr *= factor ...
    plateau_patience: int = 2  # ... after more than this many epochs in a row without a better
    # validation loss (torch's ReduceLROnPlateau rule)
    min_lr: float = 1e-5
    early_stop_patience: int = 6  # stop after this many epochs without improvement; 0: never
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, "
                             f"{self.batch_size}")
        if not 0.0 < self.plateau_factor < 1.0:
            raise ValueError(f"plateau_factor must be in (0, 1), got {self.plateau_factor}")
        if self.lr <= 0 or self.min_lr < 0 or self.grad_clip <= 0:
            raise ValueError(f"lr and grad_clip must be > 0 and min_lr >= 0, got lr={self.lr}, "
                             f"grad_clip={self.grad_clip}, min_lr={self.min_lr}")
        if self.plateau_patience < 0 or self.early_stop_patience < 0:
            raise ValueError("plateau_patience and early_stop_patience must be >= 0")


@dataclass
class TrainResult:
    """What a finished training run returns (JSON-friendly)."""

    epochs_run: int  # epochs trained by this call (0 when a finished checkpoint was reused)
    resumed_from_epoch: int
    best_epoch: int
    best_val: float
    stopped_early: bool
    history: list[dict] = field(default_factory=list)


class TrainingInterrupted(RuntimeError):
    """Training stopped on request (SIGTERM, Ctrl-C) after writing a checkpoint."""


#: stop requests of trainings running outside the main thread (a thread task runner's workers)
_THREAD_STOPS: set[GracefulStop] = set()
_THREAD_STOPS_LOCK = threading.Lock()


class GracefulStop:
    """A stop request: set by SIGTERM/SIGINT while in ``with``. In the main thread it installs
    the handlers; in another thread (where handlers cannot be installed) it registers itself so
    that :class:`ForwardStopSignals` in the main thread passes signals on, and :meth:`request`
    sets it. A second signal restores the previous handler and raises ``KeyboardInterrupt``."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.reason: str | None = None
        self._previous: dict[int, object] = {}

    def request(self, reason: str) -> None:
        self.reason = self.reason or reason

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.reason is not None:
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt(f"second {name}: stopping without a checkpoint")
        self.request(name)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        else:
            with _THREAD_STOPS_LOCK:
                _THREAD_STOPS.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        with _THREAD_STOPS_LOCK:
            _THREAD_STOPS.discard(self)


class ForwardStopSignals:
    """Main thread only: while in ``with``, SIGTERM/SIGINT request a stop of every training
    running in another thread of this process (tasks of a thread task runner), which then
    checkpoints and raises :class:`TrainingInterrupted`. With no such training, or on a second
    signal, the previous handler acts (SIGTERM's default ends the process, Ctrl-C raises
    ``KeyboardInterrupt``). Outside the main thread it does nothing."""

    def __init__(self) -> None:
        self.forwarded: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        with _THREAD_STOPS_LOCK:
            stops = list(_THREAD_STOPS)
        if stops and self.forwarded is None:
            self.forwarded = signal.Signals(signum).name
            for stop in stops:
                stop.request(self.forwarded)
            return
        previous = self._previous.get(signum, signal.SIG_DFL)
        self._restore()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signum)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> ForwardStopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in GracefulStop.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` atomically: a crash mid-write never leaves a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code from the file runs)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} has checkpoint format {ckpt.get('format')}, this version reads "
                         f"{CHECKPOINT_FORMAT}; retrain (or move the file away)")
    return ckpt


def build_model(checkpoint: dict, best: bool = True) -> Surrogate:
    """Rebuild the method stored in a checkpoint (best validation weights by default)."""
    model = build_surrogate(checkpoint["model_config"])
    model.load_state_dict(checkpoint["best_state" if best else "model_state"])
    return model.eval()


@torch.no_grad()
def evaluate_loss(model: Surrogate, x: Tensor, y: Tensor, cfg: TrainConfig, n_train: int) -> float:
    """Validation loss (the training criterion; sampling from a fixed-seed generator, so it neither
    varies between calls nor consumes the global RNG that training resumes from)."""
    model.eval()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    total = 0.0
    for i in range(0, x.shape[0], cfg.batch_size):
        xb, yb = x[i:i + cfg.batch_size], y[i:i + cfg.batch_size]
        total += model.training_loss(xb, yb, n_train=n_train, generator=gen).item() * len(xb)
    return total / x.shape[0]


OnBatch = Callable[[int, int, int, float], None]  # epoch, batch, batches per epoch, loss


def run_epoch(model: Surrogate, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
              cfg: TrainConfig, progress: dict, stop: GracefulStop,
              on_batch: OnBatch | None = None) -> bool:
    """Train on the batches of ``progress["perm"]`` from ``progress["batch"]`` on, updating
    ``progress`` (batch position, loss sum) after each step. Returns False if a stop was
    requested before the epoch's end (the state is then consistent for a mid-epoch checkpoint)."""
    model.train()
    perm, epoch = progress["perm"], progress["epoch"]
    n_batches = math.ceil(x.shape[0] / cfg.batch_size)
    while progress["batch"] < n_batches:
        b = progress["batch"]
        idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        loss = model.training_loss(x[idx], y[idx], n_train=x.shape[0])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {loss.item()} at epoch "
                                     f"{epoch + 1}, batch {b + 1}; the last good checkpoint is "
                                     "kept")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        model.clip_gradients(cfg.grad_clip)
        opt.step()
        progress["batch"] += 1
        progress["loss_sum"] += loss.item()
        if on_batch is not None:
            on_batch(epoch, b, n_batches, loss.item())
        if stop.reason is not None and progress["batch"] < n_batches:
            return False
    return True


def _state(model: Surrogate, opt: torch.optim.Optimizer, sched: object, cfg: TrainConfig,
           progress: dict) -> dict:
    return {"format": CHECKPOINT_FORMAT, "model_config": model.config.to_dict(),
            "train_config": asdict(cfg), "model_state": model.state_dict(),
            "optimizer_state": opt.state_dict(), "scheduler_state": sched.state_dict(),
            "torch_rng": torch.get_rng_state(), **progress}


PROGRESS_KEYS = ("epoch", "batch", "perm", "loss_sum", "history", "best_val", "best_epoch",
                 "best_state", "bad_epochs", "finished", "stopped_early")


def _fresh_progress(x: Tensor) -> dict:
    return {"epoch": 0, "batch": 0, "perm": torch.randperm(x.shape[0]), "loss_sum": 0.0,
            "history": [], "best_val": math.inf, "best_epoch": -1, "best_state": None,
            "bad_epochs": 0, "finished": False, "stopped_early": False}


def _resume(path: Path, model: Surrogate, opt: torch.optim.Optimizer, sched: object,
            cfg: TrainConfig) -> dict:
    ckpt = load_checkpoint(path)
    if ckpt["model_config"] != model.config.to_dict() or ckpt["train_config"] != asdict(cfg):
        raise ValueError(f"checkpoint {path} was written for another model or training config; "
                         "move it away or use another output folder")
    model.load_state_dict(ckpt["model_state"])
    opt.load_state_dict(ckpt["optimizer_state"])
    sched.load_state_dict(ckpt["scheduler_state"])
    torch.set_rng_state(ckpt["torch_rng"])
    return {k: ckpt[k] for k in PROGRESS_KEYS}


def train(model: Surrogate, data: tuple[Tensor, Tensor, Tensor, Tensor], cfg: TrainConfig,
          checkpoint_path: Path, on_epoch: Callable[[dict], None] | None = None,
          on_batch: OnBatch | None = None, stop: GracefulStop | None = None) -> TrainResult:
    """Train ``model`` on ``data = (x_train, y_train, x_val, y_val)``, resuming when
    ``checkpoint_path`` holds a checkpoint of the same model and training config (and returning
    at once when that checkpoint is finished).

    Normalisation statistics come from the training split. ``on_epoch`` receives epoch,
    train_loss, val_loss, lr, best_val and seconds after each epoch's checkpoint; ``on_batch``
    receives (epoch, batch, batches per epoch, loss) after each step.
    """
    x_tr, y_tr, x_val, y_val = data
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    if checkpoint_path.exists():
        progress = _resume(checkpoint_path, model, opt, sched, cfg)
    else:
        model.set_normalization(x_tr, y_tr)
        torch.manual_seed(cfg.seed)
        progress = _fresh_progress(x_tr)
    resumed_from, stop = progress["epoch"], stop or GracefulStop()
    with stop:
        while not progress["finished"]:
            t0 = time.perf_counter()
            if not run_epoch(model, opt, x_tr, y_tr, cfg, progress, stop, on_batch):
                save_checkpoint(checkpoint_path, _state(model, opt, sched, cfg, progress))
                raise TrainingInterrupted(
                    f"training stopped by {stop.reason} at epoch {progress['epoch'] + 1}, after "
                    f"batch {progress['batch']}; checkpoint written to {checkpoint_path}; rerun "
                    "the same command to resume")
            _end_epoch(model, opt, sched, x_tr, x_val, y_val, cfg, progress)
            progress["history"][-1]["seconds"] = time.perf_counter() - t0
            save_checkpoint(checkpoint_path, _state(model, opt, sched, cfg, progress))
            if on_epoch is not None:
                on_epoch(progress["history"][-1])
            if stop.reason is not None and not progress["finished"]:
                raise TrainingInterrupted(
                    f"training stopped by {stop.reason} after epoch {progress['epoch']}; "
                    f"checkpoint written to {checkpoint_path}; rerun the same command to resume")
    return TrainResult(epochs_run=progress["epoch"] - resumed_from,
                       resumed_from_epoch=resumed_from, best_epoch=progress["best_epoch"],
                       best_val=progress["best_val"], stopped_early=progress["stopped_early"],
                       history=progress["history"])


def _end_epoch(model: Surrogate, opt: torch.optim.Optimizer, sched: object, x_tr: Tensor,
               x_val: Tensor, y_val: Tensor, cfg: TrainConfig, progress: dict) -> None:
    """Validation, best-weights bookkeeping, LR schedule, early stopping, next epoch's shuffle."""
    epoch = progress["epoch"]
    n_batches = math.ceil(x_tr.shape[0] / cfg.batch_size)
    val = evaluate_loss(model, x_val, y_val, cfg, x_tr.shape[0])
    lr = opt.param_groups[0]["lr"]
    if val < progress["best_val"]:
        progress.update(best_val=val, best_epoch=epoch, bad_epochs=0,
                        best_state={k: v.detach().clone() for k, v in model.state_dict().items()})
    else:
        progress["bad_epochs"] += 1
    sched.step(val)
    progress["history"].append({"epoch": epoch, "train_loss": progress["loss_sum"] / n_batches,
                                "val_loss": val, "lr": lr, "best_val": progress["best_val"]})
    early = 0 < cfg.early_stop_patience <= progress["bad_epochs"]
    progress.update(epoch=epoch + 1, batch=0, loss_sum=0.0, stopped_early=early,
                    finished=early or epoch + 1 >= cfg.epochs)
    # the next epoch's shuffle is drawn now, so a checkpoint taken mid-epoch holds it
    progress["perm"] = None if progress["finished"] else torch.randperm(x_tr.shape[0])
