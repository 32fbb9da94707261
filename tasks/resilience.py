"""Resilience and load stage: Prefect retries against injected transient faults, invalid inputs
that fail at once, and a bounded concurrent-inference load on the trained model."""

from __future__ import annotations

import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from prefect import task
from prefect.runtime import task_run

from model.inference import InvalidInputError, Predictor
from model.train import build_model, load_checkpoint
from tasks import task_logger


class TransientFault(OSError):
    """An injected I/O-like failure that succeeds on a later attempt."""


def retry_transient(task, task_run, state) -> bool:  # noqa: ANN001 (Prefect's hook signature)
    """Retry only what can succeed on a second try (I/O, connections, timeouts); a bad input or a
    bug fails at once."""
    try:
        state.result()
    except (OSError, TimeoutError):
        return True
    except Exception:
        return False
    return False


def record_attempt(ledger: Path) -> int:
    """Append this task run's attempt number to ``ledger`` (a file per task): the count of lines
    is what Prefect really ran, read without waiting for the API to catch up."""
    attempt = task_run.run_count
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with ledger.open("a") as f:
        f.write(f"{attempt}\n")
    return attempt


def attempts(ledger: Path) -> int:
    """How many attempts :func:`record_attempt` saw (0 if the task never started)."""
    return len(ledger.read_text().split()) if ledger.exists() else 0


@task(name="reload-checkpoint", retry_condition_fn=retry_transient)
def reload_checkpoint(checkpoint: str, injected_faults: int, ledger: Path) -> dict:
    """Reload the model from its checkpoint; the first ``injected_faults`` attempts fail with a
    TransientFault, so the task only succeeds if Prefect really retries it."""
    attempt = record_attempt(ledger)
    if attempt <= injected_faults:
        raise TransientFault(f"injected transient fault on attempt {attempt} of reading "
                             f"{checkpoint}")
    model = build_model(load_checkpoint(Path(checkpoint)))
    return {"attempts": attempt, "parameters": sum(p.numel() for p in model.parameters())}


@task(name="guarded-predict", retry_condition_fn=retry_transient)
def guarded_predict(checkpoint: str, x: np.ndarray, ledger: Path) -> dict:
    """One validated inference request (used to show that invalid input is not retried)."""
    record_attempt(ledger)
    model = build_model(load_checkpoint(Path(checkpoint)))
    out = Predictor(model, x.shape[2:], n_samples=4).predict(x)
    return {"attempts": task_run.run_count, "shape": list(out["mean"].shape)}


def bad_requests(valid: np.ndarray) -> dict[str, object]:
    """Malformed requests built from one valid (B, C, H, W) input; each must be rejected."""
    nan, inf = valid.copy(), valid.copy()
    nan[(0, 0, *(1,) * (valid.ndim - 2))] = np.nan
    inf[(0, 0, *(2,) * (valid.ndim - 2))] = np.inf
    return {"nan": nan, "inf": inf, "wrong_grid": valid[..., :-1], "wrong_channels":
            np.concatenate([valid, valid], axis=1), "no_channel_axis": valid[:, 0, 0],
            "empty_batch": valid[:0], "complex": valid.astype(np.complex64),
            "text": np.array([["a"]]), "not_an_array": [[1.0, 2.0]]}


def run_load(predictor: Predictor, inputs: np.ndarray, requests: int, threads: int,
             batch: int) -> dict:
    """``requests`` valid requests of ``batch`` inputs each from ``threads`` threads; latency
    percentiles, throughput and the errors (an error on a valid input is a failure)."""
    def one(i: int) -> tuple[float, str | None]:
        start = (i * batch) % max(len(inputs) - batch + 1, 1)
        t0 = time.perf_counter()
        try:
            predictor.predict(inputs[start:start + batch], seed=i)
            return time.perf_counter() - t0, None
        except Exception as e:  # counted and reported, never hidden
            return time.perf_counter() - t0, f"{type(e).__name__}: {e}"

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - t0
    lat = np.array([r[0] for r in results]) * 1000.0
    errors = [r[1] for r in results if r[1] is not None]
    return {"requests": requests, "threads": threads, "batch": batch, "errors": len(errors),
            "error_examples": errors[:3], "error_rate": len(errors) / requests,
            "throughput_rps": requests / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "p99_ms": float(np.percentile(lat, 99)),
            "wall_seconds": wall}


def refuses_pickled_code(tmp_dir: Path) -> bool:
    """True when the checkpoint loader refuses a file that would run code when unpickled."""
    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("pickled code ran",))

    path = tmp_dir / "untrusted.pt"
    torch.save({"model_state": Payload()}, path)  # pickles a call to print()
    try:
        load_checkpoint(path)
    except pickle.UnpicklingError:
        return True
    return False


@task(name="load-test")
def load_test(checkpoint: str, test_path: str, threads: int, requests: int,
              batch: int, n_samples: int, out_dir: Path) -> dict:
    """Concurrent inference on test inputs plus malformed requests and an untrusted checkpoint."""
    from tasks.train import load_tensors

    model = build_model(load_checkpoint(Path(checkpoint)))
    x = load_tensors(test_path)[0].numpy()
    predictor = Predictor(model, x.shape[2:], n_samples=n_samples)
    load = run_load(predictor, x, requests, threads, batch)
    rejected, crashed = [], []
    bad = bad_requests(x[:batch])
    for name, payload in bad.items():
        try:
            predictor.predict(payload)
        except InvalidInputError:
            rejected.append(name)
        except Exception as e:
            crashed.append(f"{name}: {type(e).__name__}: {e}")
    valid_rejected = 0
    for i in range(len(x)):
        try:
            predictor.validate(x[i:i + 1])
        except InvalidInputError:
            valid_rejected += 1
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {**load, "bad_total": len(bad),
              "bad_rejected": len(rejected), "bad_crashed": crashed,
              "valid_checked": len(x), "valid_rejected": valid_rejected,
              "refuses_pickled_code": refuses_pickled_code(out_dir)}
    task_logger().info("load: %d requests, %d errors, %.1f req/s, p95 %.1f ms; bad inputs "
                          "rejected %d/%d", load["requests"], load["errors"],
                          load["throughput_rps"], load["p95_ms"], len(rejected),
                          result["bad_total"])
    return result
