"""The trainer: resume equivalence (after a crash, SIGTERM and SIGKILL), the NaN stop, early
stopping with the plateau schedule, callbacks, and checkpoints that rebuild their model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_method
from torch import Tensor

from model.methods import MethodConfig, Surrogate
from model.train import TrainConfig, TrainingInterrupted, build_model, load_checkpoint, train


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a)["model_state"], load_checkpoint(b)["model_state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("method", ["fno", "pno-dropout"])
def test_resume_after_a_crash_reaches_the_same_weights(xy, tmp_path: Path, method: str):
    """3 epochs straight vs a crash after epoch 2's checkpoint and a resume: bitwise equal."""
    x, y = xy
    cfg = TrainConfig(epochs=3, batch_size=4, seed=5, early_stop_patience=0)
    straight = train(tiny_method(method), (x, y, x, y), cfg, tmp_path / "a.pt")
    seen: list[int] = []

    def crash_after_two(rec: dict) -> None:
        seen.append(rec["epoch"])
        if rec["epoch"] == 1:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_method(method), (x, y, x, y), cfg, tmp_path / "b.pt", on_epoch=crash_after_two)
    resumed = train(tiny_method(method), (x, y, x, y), cfg, tmp_path / "b.pt")
    assert seen == [0, 1] and resumed.resumed_from_epoch == 2 and resumed.epochs_run == 1
    assert_same_weights(tmp_path / "a.pt", tmp_path / "b.pt")
    drop = ("seconds",)
    assert ([{k: v for k, v in h.items() if k not in drop} for h in straight.history]
            == [{k: v for k, v in h.items() if k not in drop} for h in resumed.history])


def test_sigterm_finishes_the_batch_checkpoints_mid_epoch_and_resumes_exactly(xy, tmp_path: Path):
    x, y = xy
    cfg = TrainConfig(epochs=3, batch_size=2, seed=1, early_stop_patience=0)
    train(tiny_method("pno-dropout"), (x, y, x, y), cfg, tmp_path / "a.pt")
    batches: list[tuple[int, int]] = []

    def term_in_epoch_two(epoch: int, batch: int, n: int, loss: float) -> None:
        batches.append((epoch, batch))
        if (epoch, batch) == (1, 0):
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to the trainer's handler

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match=r"SIGTERM at epoch 2, after batch 1.*resume"):
        train(tiny_method("pno-dropout"), (x, y, x, y), cfg, tmp_path / "b.pt",
              on_batch=term_in_epoch_two)
    assert signal.getsignal(signal.SIGTERM) is previous  # handler restored
    assert batches[-1] == (1, 0)  # the batch in flight finished, no further batch started
    ckpt = load_checkpoint(tmp_path / "b.pt")
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 1)
    resumed = train(tiny_method("pno-dropout"), (x, y, x, y), cfg, tmp_path / "b.pt")
    assert resumed.resumed_from_epoch == 1
    assert_same_weights(tmp_path / "a.pt", tmp_path / "b.pt")


SCRIPT = textwrap.dedent("""
    import sys, time, torch
    from pathlib import Path
    from conftest import tiny_method
    from model.train import TrainConfig, train
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.where(torch.randn(12, 1, 16, 16, generator=g) > 0, 12.0, 3.0)
    y = torch.rand(12, 1, 16, 16, generator=g) * 0.01
    slow = sys.argv[2] == "slow"
    cfg = TrainConfig(epochs=4, batch_size=2, seed=3, early_stop_patience=0)
    train(tiny_method("pno-dropout"), (x, y, x, y), cfg, Path(sys.argv[1]),
          on_batch=lambda *a: time.sleep(0.05) if slow else None)
""")


def test_sigkill_at_any_point_then_resume_matches_an_uninterrupted_run(tmp_path: Path):
    """A real SIGKILL of a training process (mid-epoch, no handler can run), then a resume in a
    fresh process: the same final weights as one uninterrupted process."""
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                                         str(Path(__file__).parents[1])])}
    run = [sys.executable, str(script)]
    subprocess.run([*run, str(tmp_path / "ref.pt"), "fast"], check=True, env=env, timeout=120)
    proc = subprocess.Popen([*run, str(tmp_path / "k.pt"), "slow"], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill once a checkpoint of epoch 2 exists
        if (tmp_path / "k.pt").exists() and load_checkpoint(tmp_path / "k.pt")["epoch"] >= 2:
            break
        time.sleep(0.02)
    time.sleep(0.12)  # a few batches into the next epoch
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    killed_at = load_checkpoint(tmp_path / "k.pt")["epoch"]
    assert 2 <= killed_at < 4
    subprocess.run([*run, str(tmp_path / "k.pt"), "fast"], check=True, env=env, timeout=120)
    assert load_checkpoint(tmp_path / "k.pt")["epoch"] == 4
    assert_same_weights(tmp_path / "ref.pt", tmp_path / "k.pt")


def test_nan_loss_stops_naming_epoch_and_batch_and_keeps_the_last_good_checkpoint(
        xy, tmp_path: Path):
    x, y = xy
    y = y.clone()
    path = tmp_path / "n.pt"

    def poison(rec: dict) -> None:  # after epoch 1's checkpoint, every target becomes NaN
        y.fill_(float("nan"))

    with pytest.raises(FloatingPointError, match=r"non-finite training loss nan at epoch 2, "
                                                 r"batch 1; the last good checkpoint is kept"):
        train(tiny_method("fno"), (x, y, x, y.clone()), TrainConfig(epochs=3, batch_size=3),
              path, on_epoch=poison)
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1 and not ckpt["finished"]
    assert all(torch.isfinite(v).all() for v in ckpt["model_state"].values())


class _Scalar(Surrogate):
    """y = w * x with one weight: a model whose validation loss we control exactly."""

    method = "fno"

    def __init__(self) -> None:
        super().__init__(MethodConfig("fno"))
        self.w = torch.nn.Parameter(torch.zeros(()))

    def set_normalization(self, x: Tensor, y: Tensor) -> None:
        pass

    def forward(self, x: Tensor) -> Tensor:
        return self.w * x

    def training_loss(self, x: Tensor, y: Tensor, *, n_train: int,
                      generator: torch.Generator | None = None) -> Tensor:
        return ((self.w * x - y) ** 2).mean()


def test_early_stopping_and_plateau_schedule(tmp_path: Path):
    """Training pulls w towards +1 while the validation data want -1: the validation loss only
    grows, so the LR halves after ``plateau_patience`` + 1 epochs and training stops after
    ``early_stop_patience``; the best weights are those of epoch 1."""
    x = torch.ones(8, 1, 4, 4)
    cfg = TrainConfig(epochs=50, batch_size=4, lr=0.01, weight_decay=0.0, plateau_patience=1,
                      early_stop_patience=3)
    result = train(_Scalar(), (x, x, x, -x), cfg, tmp_path / "s.pt")
    assert result.stopped_early and len(result.history) == 4 and result.best_epoch == 0
    lrs = [h["lr"] for h in result.history]
    # torch's rule: the LR drops once more than plateau_patience epochs in a row were no better
    assert lrs[:3] == [0.01] * 3 and lrs[3] == pytest.approx(0.005)
    again = train(_Scalar(), (x, x, x, -x), cfg, tmp_path / "s.pt")  # finished: reused
    assert again.epochs_run == 0 and again.stopped_early


def test_callbacks_see_every_batch_and_epoch(xy, tmp_path: Path):
    x, y = xy
    seen_batches, seen_epochs = [], []
    train(tiny_method("fno"), (x, y, x, y), TrainConfig(epochs=2, batch_size=4), tmp_path / "c.pt",
          on_epoch=lambda r: seen_epochs.append(r), on_batch=lambda *a: seen_batches.append(a))
    assert [(e, b, n) for e, b, n, _ in seen_batches] == [(0, 0, 2), (0, 1, 2), (1, 0, 2),
                                                          (1, 1, 2)]
    assert [r["epoch"] for r in seen_epochs] == [0, 1]
    assert {"train_loss", "val_loss", "lr", "best_val", "seconds"} <= set(seen_epochs[0])


def test_resume_refuses_a_checkpoint_of_another_config(xy, tmp_path: Path):
    x, y = xy
    train(tiny_method("fno"), (x, y, x, y), TrainConfig(epochs=1, batch_size=6), tmp_path / "c.pt")
    with pytest.raises(ValueError, match="another model or training config"):
        train(tiny_method("fno"), (x, y, x, y), TrainConfig(epochs=1, batch_size=3),
              tmp_path / "c.pt")


def test_checkpoint_rebuilds_model_without_training_code(tiny_checkpoint: Path, xy, fno_cfg):
    ckpt = load_checkpoint(tiny_checkpoint)
    assert {"model_config", "train_config", "model_state", "optimizer_state", "scheduler_state",
            "epoch", "torch_rng", "best_state", "history"} <= set(ckpt)
    model = build_model(ckpt)
    assert model.probabilistic and model.config.backbone == fno_cfg
    assert model.method == "pno-dropout" and model(xy[0]).shape == (6, 1, 16, 16)
