"""MLflow tracking: one run per pipeline run, opened by id from any task (the active run of the
``mlflow`` module is per thread, so tasks use an explicit client and run id)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from prefect import task

from pno.config import PipelineConfig, flatten
from tasks import task_logger


def _artifact_location(tracking_uri: str) -> str | None:
    """A local SQLite store keeps artifacts in ``mlruns/`` beside its database file (the current
    directory by default); a tracking server decides for itself."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    return (db.parent / "mlruns").resolve().as_uri()


def log_metrics(tracking_uri: str, run_id: str, metrics: dict[str, float],
                step: int | None = None) -> None:
    """Log finite numeric metrics in one batch (non-finite values are skipped, not faked)."""
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
             if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
    if batch:
        MlflowClient(tracking_uri).log_batch(run_id, metrics=batch)


def log_artifacts(tracking_uri: str, run_id: str, paths: list[str | Path],
                  artifact_path: str | None = None) -> None:
    """Log files (or whole folders) under ``artifact_path`` of the run."""
    client = MlflowClient(tracking_uri)
    for p in map(Path, paths):
        if p.is_dir():
            client.log_artifacts(run_id, str(p), artifact_path)
        else:
            client.log_artifact(run_id, str(p), artifact_path)


@task(name="log-to-run", retries=2, retry_delay_seconds=[1, 4])
def log_to_run(tracking_uri: str, run_id: str, artifacts: dict[str, list] | None = None,
               metrics: dict[str, float] | None = None) -> None:
    """Log ``{artifact_folder: [paths]}`` and ``metrics`` to the run (retried: it is I/O)."""
    for folder, paths in (artifacts or {}).items():
        log_artifacts(tracking_uri, run_id, paths, folder)
    log_metrics(tracking_uri, run_id, metrics or {})


def experiment_id(client: MlflowClient, tracking_uri: str, name: str) -> str:
    """Id of the experiment ``name``, created (artifacts beside a SQLite store) when missing."""
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp else client.create_experiment(
        name, artifact_location=_artifact_location(tracking_uri))


@task(name="start-tracking", retries=2, retry_delay_seconds=[1, 4])
def start_run(cfg: PipelineConfig, run_name: str, pipeline: str = "robustness") -> dict:
    """Create the MLflow run of this pipeline run (tag ``pipeline``) and log the config as
    params."""
    uri = cfg.resolved_tracking_uri()
    client = MlflowClient(uri)
    exp_id = experiment_id(client, uri, cfg.experiment)
    run = client.create_run(exp_id, run_name=run_name, tags={"pipeline": pipeline})
    params = [Param(k, str(v)[:6000]) for k, v in flatten(cfg).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[i:i + 100])
    task_logger().info("MLflow run %s in experiment %s (%s)", run.info.run_id, exp_id, uri)
    return {"run_id": run.info.run_id, "experiment_id": exp_id, "tracking_uri": uri,
            "run_name": run_name}


@task(name="log-model", retries=2, retry_delay_seconds=[1, 4])
def log_model(tracking_uri: str, run_id: str, checkpoint: str,
              spatial_shape: tuple[int, ...]) -> dict:
    """Log the served method as an MLflow PyTorch model (pickle format: fast, no input example)
    beside its checkpoint, then load it back from MLflow and compare predictions."""
    import torch

    from model.train import build_model, load_checkpoint

    model = build_model(load_checkpoint(Path(checkpoint)))
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model, name="model", serialization_format="pickle",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
            code_paths=[str(Path(__file__).resolve().parents[1] / "model")])
    reloaded = mlflow.pytorch.load_model(info.model_uri).eval()
    x = torch.rand(2, model.in_channels, *spatial_shape,
                   generator=torch.Generator().manual_seed(0)) * 9 + 3
    with torch.no_grad():
        diff = (reloaded(x) - model(x)).abs().max().item()
    return {"model_uri": info.model_uri, "model_id": info.model_id, "reload_max_abs_diff": diff}


@task(name="finish-tracking")
def finish_run(tracking_uri: str, run_id: str, status: str) -> list[str]:
    """Close the run with ``status`` (FINISHED or FAILED); returns its artifact paths."""
    client = MlflowClient(tracking_uri)
    client.set_terminated(run_id, status)
    return list_artifacts(tracking_uri, run_id)


@contextmanager
def closing_run(tracking_uri: str, run_id: str, partial: Path | None = None) -> Iterator[None]:
    """Close the MLflow run when the block ends: FINISHED when it completes; FAILED when it
    raises (anything, Ctrl-C included), after logging what ``partial`` holds under ``partial/``
    (e.g. the GX result of data that failed), so that nothing a stage wrote is lost."""
    try:
        yield
    except BaseException:
        if partial is not None and partial.exists():
            log_to_run(tracking_uri, run_id, {"partial": [partial]})
        finish_run(tracking_uri, run_id, "FAILED")
        raise
    finish_run(tracking_uri, run_id, "FINISHED")


def list_artifacts(tracking_uri: str, run_id: str, path: str | None = None) -> list[str]:
    """All artifact file paths of a run, recursively."""
    client = MlflowClient(tracking_uri)
    out = []
    for item in client.list_artifacts(run_id, path):
        out.extend(list_artifacts(tracking_uri, run_id, item.path) if item.is_dir else [item.path])
    return out
