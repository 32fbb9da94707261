"""Retries really retry (and only transient faults), invalid input gets a clear error, load runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prefect import flow

from model.inference import InvalidInputError, Predictor
from model.train import build_model, load_checkpoint
from tasks.resilience import (
    attempts,
    bad_requests,
    guarded_predict,
    refuses_pickled_code,
    reload_checkpoint,
    run_load,
)
from tasks.train import load_tensors


def _summary(state, ledger: Path) -> dict:  # noqa: ANN001
    """What a test needs of a task's final state (a flow returning a failed state would fail)."""
    return {"completed": state.is_completed(), "message": state.message,
            "run_count": attempts(ledger),
            "result": state.result() if state.is_completed() else None}


@flow
def _retry_flow(checkpoint: str, faults: int, retries: int, ledger: Path) -> dict:
    return _summary(reload_checkpoint.with_options(retries=retries, retry_delay_seconds=0)(
        checkpoint, faults, ledger, return_state=True), ledger)


@flow
def _guard_flow(checkpoint: str, x: np.ndarray, ledger: Path) -> dict:
    return _summary(guarded_predict.with_options(retries=3, retry_delay_seconds=0)(
        checkpoint, x, ledger, return_state=True), ledger)


def test_transient_faults_are_retried_until_success(prefect_server, tiny_checkpoint: Path,
                                                    tmp_path: Path):
    out = _retry_flow(str(tiny_checkpoint), faults=2, retries=3, ledger=tmp_path / "a")
    assert out["completed"] and out["run_count"] == 3
    assert out["result"]["attempts"] == 3  # two injected faults, success on the third run


def test_more_faults_than_retries_fail(prefect_server, tiny_checkpoint: Path, tmp_path: Path):
    out = _retry_flow(str(tiny_checkpoint), faults=3, retries=1, ledger=tmp_path / "b")
    assert not out["completed"] and out["run_count"] == 2
    assert "injected transient fault on attempt 2" in out["message"]


def test_invalid_input_is_not_retried(prefect_server, tiny_checkpoint: Path, tmp_path: Path):
    bad = np.full((1, 1, 16, 16), np.nan, dtype=np.float32)
    out = _guard_flow(str(tiny_checkpoint), bad, ledger=tmp_path / "c")
    assert not out["completed"] and "non-finite" in out["message"]
    assert out["run_count"] == 1  # retries=3 was set, but a bad input is not transient


@pytest.fixture
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor(build_model(load_checkpoint(tiny_checkpoint)), (16, 16), n_samples=4)


def test_every_malformed_request_is_rejected_clearly(predictor: Predictor, tiny_darcy: Path):
    x = load_tensors(tiny_darcy)[0].numpy()
    for name, payload in bad_requests(x[:2]).items():
        with pytest.raises(InvalidInputError):
            predictor.predict(payload)
        assert name  # each case is named for the report


@pytest.mark.parametrize(("payload", "message"), [
    (np.zeros((1, 1, 16, 15)), r"shape must be \(B, 1, 16, 16\).*got \(1, 1, 16, 15\)"),
    (np.full((2, 1, 16, 16), np.inf), r"512 non-finite values .* first at index \(0, 0, 0, 0\)"),
    ("12.0", "numpy array or torch tensor"),
])
def test_messages_say_what_was_wrong(predictor: Predictor, payload, message: str):
    with pytest.raises(InvalidInputError, match=message):
        predictor.validate(payload)


def test_valid_inputs_are_accepted_and_answered(predictor: Predictor, tiny_darcy: Path):
    x = load_tensors(tiny_darcy)[0].numpy()
    out = predictor.predict(x[:3])
    assert out["mean"].shape == (3, 1, 16, 16) and out["std"].shape == (3, 1, 16, 16)
    assert np.all(out["std"] > 0)
    single = predictor.predict(x[0])  # (C, H, W) is taken as a batch of one
    assert single["mean"].shape == (1, 1, 16, 16)


def test_concurrent_load_counts_requests_and_errors(predictor: Predictor, tiny_darcy: Path):
    x = load_tensors(tiny_darcy)[0].numpy()
    res = run_load(predictor, x, requests=24, threads=3, batch=2)
    assert res["requests"] == 24 and res["errors"] == 0
    assert 0 < res["p50_ms"] <= res["p95_ms"] <= res["p99_ms"]
    broken = run_load(predictor, np.full_like(x, np.nan), requests=6, threads=2, batch=2)
    assert broken["errors"] == 6 and broken["error_rate"] == 1.0  # errors are counted, not hidden
    assert "InvalidInputError" in broken["error_examples"][0]


def test_untrusted_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert refuses_pickled_code(tmp_path)
    assert "pickled code ran" not in capsys.readouterr().out
