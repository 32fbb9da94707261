"""Scale-out through Prefect task runners: the settings build the runner asked for, stop signals
reach training in worker threads, and the smoke flow on a two-worker Dask cluster gives exactly
the results of the default runner."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from model.train import ForwardStopSignals, GracefulStop, load_checkpoint
from pno.cli import _runner_sets
from pno.config import RunnerConfig, build_config
from pno.runners import build_task_runner, runner_mismatch


def test_settings_build_the_runner_asked_for():
    threads = build_task_runner(RunnerConfig(max_workers=3))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    local = build_task_runner(RunnerConfig(kind="dask", dask_workers=2))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs["n_workers"] == 2 and local.cluster_kwargs["processes"]
    assert local.cluster_kwargs["threads_per_worker"] == 1
    remote = build_task_runner(RunnerConfig(kind="dask", dask_address="tcp://127.0.0.1:8786"))
    assert remote.address == "tcp://127.0.0.1:8786" and not remote.cluster_kwargs
    with pytest.raises(ValueError, match="needs kind='dask'"):
        RunnerConfig(dask_address="tcp://127.0.0.1:8786")


def test_cli_flags_become_runner_settings():
    assert _runner_sets(None, None) == []
    assert _runner_sets("dask", None) == ["runner.kind=dask"]
    assert _runner_sets(None, "tcp://h:1") == ["runner.kind=dask", "runner.dask_address=tcp://h:1"]
    import typer

    with pytest.raises(typer.BadParameter, match="threads or dask"):
        _runner_sets("ray", None)


def test_a_runner_other_than_the_settings_is_named():
    default = build_task_runner(RunnerConfig())
    assert runner_mismatch(default, RunnerConfig()) is None
    message = runner_mismatch(default, RunnerConfig(kind="dask"))
    assert message and "ThreadPoolTaskRunner(max_workers=1)" in message
    assert runner_mismatch(default, RunnerConfig(max_workers=2))


def test_stop_signals_reach_training_in_a_worker_thread():
    """SIGTERM in the main thread requests a stop of a GracefulStop held by another thread; with
    no training running, the previous handler gets the signal."""
    entered, seen = threading.Event(), []

    def training() -> None:
        with GracefulStop() as stop:
            entered.set()
            deadline = time.monotonic() + 10
            while stop.reason is None and time.monotonic() < deadline:
                time.sleep(0.01)
            seen.append(stop.reason)

    previous_calls: list[int] = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: previous_calls.append(signum))
    try:
        with ForwardStopSignals():
            worker = threading.Thread(target=training)
            worker.start()
            assert entered.wait(5)
            os.kill(os.getpid(), signal.SIGTERM)
            worker.join(10)
            assert seen == ["SIGTERM"] and previous_calls == []
        with ForwardStopSignals():  # nothing to forward to: the previous handler acts
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        assert previous_calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old)


def _hashes(report: dict) -> list[str]:
    return [c["value"].split()[0] for c in report["checks"] if "content hash" in c["name"]]


@pytest.mark.slow
def test_dask_cluster_gives_the_results_of_the_default_runner(prefect_server, tmp_path: Path):
    """The smoke flow with training and evaluation on a local two-worker Dask cluster (separate
    processes) reaches the same data, the same weights and the same scores, bit for bit."""
    from distributed import Client, LocalCluster

    from flows.robustness import robustness_pipeline

    def smoke(out: str, **overrides: object):  # noqa: ANN202
        return build_config("smoke", {"output_dir": str(tmp_path / out),
                                      "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                      **overrides})

    reference = robustness_pipeline(smoke("threads"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        cfg = smoke("dask", runner={"kind": "dask", "dask_address": cluster.scheduler_address})
        scaled = robustness_pipeline.with_options(task_runner=build_task_runner(cfg.runner))(cfg)
        # the tasks ran in the workers: they imported the training task, in other processes
        ran = client.run(lambda: ("tasks.train" in sys.modules, os.getpid()))
    assert any(imported for imported, _ in ran.values()), ran
    assert all(pid != os.getpid() for _, pid in ran.values())
    r1, r2 = (json.loads(Path(r["report"]["json"]).read_text()) for r in (reference, scaled))
    assert _hashes(r1) == _hashes(r2) and len(_hashes(r1)) == 5
    assert r1["scores"] == r2["scores"] and set(r1["scores"]) == {"fno", "pno-dropout"}
    for method in ("fno", "pno-dropout"):
        w1, w2 = (load_checkpoint(_checkpoint(r, method))["best_state"]
                  for r in (reference, scaled))
        assert all(torch.equal(w1[k], w2[k]) for k in w1), method


def _checkpoint(result: dict, method: str) -> Path:
    """The checkpoint file of ``method`` in a run's output folder."""
    return next((Path(result["run_dir"]).parents[1] / "checkpoints").glob(f"{method}-*.pt"))
