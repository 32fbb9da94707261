"""Prefect task runners for the pipeline's fan-out, built from :class:`pno.config.RunnerConfig`.

Threads (the default, one at a time) keep a run repeatable: torch's global RNG, which dropout
uses during training, and its thread pool are shared by every thread of a process. Dask runs each
task in a worker process of its own (one thread per worker), so tasks in parallel stay
repeatable; the workers import the repository's packages, which must be installed where they run.
"""

from __future__ import annotations

from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from model.train import ForwardStopSignals
from pno.config import RunnerConfig
from tasks import task_logger


def build_task_runner(cfg: RunnerConfig) -> TaskRunner:
    """The task runner ``cfg`` asks for (prefect-dask is imported only when asked for)."""
    if cfg.kind == "threads":
        return ThreadPoolTaskRunner(max_workers=cfg.max_workers)
    from prefect_dask import DaskTaskRunner

    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    # a local cluster on loopback, no dashboard (no port to collide with)
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.dask_workers, "threads_per_worker": 1,
                                          "processes": True, "host": "127.0.0.1",
                                          "dashboard_address": None})


def describe(runner: TaskRunner) -> str:
    """One line naming a task runner and its size."""
    name = type(runner).__name__
    if isinstance(runner, ThreadPoolTaskRunner):
        return f"{name}(max_workers={getattr(runner, '_max_workers', '?')})"
    address = getattr(runner, "address", None)
    if address:
        return f"{name}(address={address})"
    kwargs = getattr(runner, "cluster_kwargs", {})
    return f"{name}(local cluster, n_workers={kwargs.get('n_workers', '?')})"


def runner_mismatch(runner: TaskRunner, cfg: RunnerConfig) -> str | None:
    """Why ``runner`` is not the one ``cfg`` describes; None when it is."""
    wanted = build_task_runner(cfg) if cfg.kind == "threads" else None
    if wanted is not None and describe(runner) == describe(wanted):
        return None
    if cfg.kind == "dask" and type(runner).__name__ == "DaskTaskRunner":
        return None
    return (f"the flow runs its tasks with {describe(runner)}, but runner settings ask for "
            f"{cfg.model_dump()}: a deployment keeps the flow's task runner; pno run "
            "(--task-runner, --set runner.*) builds the one asked for")


def warn_if_other_runner(cfg: RunnerConfig) -> str | None:
    """Inside a flow run: log a warning when its task runner is not the one ``cfg`` asks for
    (a deployment's parameters cannot change the task runner); returns the warning."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.task_runner is None:
        return None
    message = runner_mismatch(ctx.task_runner, cfg)
    if message:
        task_logger().warning(message)
    return message


def forward_stop_signals() -> ForwardStopSignals:
    """For the flow (main thread): SIGTERM/Ctrl-C reach the trainings running in the task
    runner's threads, which finish their batch, checkpoint and raise ``TrainingInterrupted``
    (:class:`model.train.ForwardStopSignals`). Prefect's own SIGTERM handling acts otherwise."""
    return ForwardStopSignals()
