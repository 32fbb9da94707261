"""The ``pno`` command line."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from pno import OFFLINE_ENV

# Offline by default: nothing here should try the network (set before prefect/mlflow import).
for _key, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)

from pno.config import PRESETS, PipelineConfig, build_config, parse_overrides  # noqa: E402
from pno.stack import Stack, StackError  # noqa: E402

app = typer.Typer(help="PNO Physics Bench: probabilistic neural operators, checked end to end.",
                  no_args_is_help=True, add_completion=False)

PresetOpt = Annotated[str, typer.Option("--preset", "-p",
                                        help=f"named configuration: {', '.join(PRESETS)}")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", help="override a setting, e.g. --set train.epochs=5 (repeatable)")]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", "-o", help="output folder (data, checkpoints, reports); default ./pno-output")]


PdeOpt = Annotated[str | None, typer.Option(
    "--pde", help="darcy (default), burgers, ks or navier_stokes")]
MethodOpt = Annotated[list[str] | None, typer.Option(
    "--method", "-m", help="method to train and score (repeatable): fno, pno-dropout, "
    "pno-reparam, variational, mc-dropout, ensemble, deeponet, or all; default fno and "
    "pno-dropout")]


def _config(preset: str, sets: list[str] | None, out: Path | None,
            pde: str | None = None, methods: list[str] | None = None) -> PipelineConfig:
    overrides = parse_overrides(sets or [])
    if pde is not None:
        overrides.setdefault("data", {})["pde"] = pde
    if methods:
        if "all" in methods:
            from model.methods import METHODS

            methods = list(METHODS)
        overrides.setdefault("train", {})["methods"] = methods
    if out is not None:
        overrides["output_dir"] = str(out)
    try:
        return build_config(preset, overrides)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


RunnerOpt = Annotated[str | None, typer.Option(
    "--task-runner", help="task runner of the training and evaluation fan-out: threads "
    "(default; --set runner.max_workers=N) or dask (a local cluster of runner.dask_workers "
    "processes)")]
DaskAddressOpt = Annotated[str | None, typer.Option(
    "--dask-address", help="run the fan-out on the Dask scheduler at this address, e.g. "
    "tcp://10.0.0.5:8786 (implies --task-runner dask)")]


def _runner_sets(task_runner: str | None, dask_address: str | None) -> list[str]:
    """--task-runner / --dask-address as ``runner.*`` overrides."""
    if task_runner is not None and task_runner not in ("threads", "dask"):
        raise typer.BadParameter(f"--task-runner must be threads or dask, got {task_runner!r}")
    sets = [f"runner.kind={task_runner}"] if task_runner else []
    if dask_address:
        sets += ["runner.kind=dask", f"runner.dask_address={dask_address}"]
    return sets


@app.command()
def run(preset: PresetOpt = "default", set_: SetOpt = None, out: OutOpt = None,
        pde: PdeOpt = None, method: MethodOpt = None, task_runner: RunnerOpt = None,
        dask_address: DaskAddressOpt = None) -> None:
    """Run the robustness pipeline (data, expectations, training, evaluation, drift, resilience,
    report), logging to MLflow. Prefect: the server at $PREFECT_API_URL when set (see
    ``pno up``), else a temporary local one; MLflow: $MLFLOW_TRACKING_URI, else ./mlflow.db.

    SIGTERM or Ctrl-C during training finish the current batch and write a checkpoint; the same
    command then resumes. Exit status: 0 PASS, 2 a gate failed, 130/143 interrupted.
    """
    cfg = _config(preset, [*(set_ or []), *_runner_sets(task_runner, dask_address)], out, pde,
                  method)
    uri = cfg.resolved_tracking_uri()
    prefect_api = os.environ.get("PREFECT_API_URL") or "a temporary local server"
    typer.echo(f"pno run: pde={cfg.data.pde}, methods={','.join(cfg.train.methods)}, "
               f"preset={preset}, output={cfg.output_dir.resolve()}, MLflow={uri}, "
               f"Prefect={prefect_api}, task runner={cfg.runner.kind}")
    from flows.robustness import robustness_pipeline  # imports prefect and mlflow (seconds)
    from model.train import TrainingInterrupted
    from pno.runners import build_task_runner

    pipeline = robustness_pipeline.with_options(task_runner=build_task_runner(cfg.runner))
    t0 = time.perf_counter()
    try:
        result = pipeline(cfg)
    except TrainingInterrupted as e:
        typer.echo(f"pno run interrupted: {e}", err=True)
        raise typer.Exit(code=143 if "SIGTERM" in str(e) else 130) from e
    _summary(result, uri, time.perf_counter() - t0)
    if result["report"]["overall_status"] != "PASS":
        raise typer.Exit(code=2)


def _summary(result: dict, uri: str, seconds: float) -> None:
    """Print the verdict, the report paths and where to browse the MLflow run."""
    report, tracking = result["report"], result["tracking"]
    typer.echo("")
    typer.echo(f"Overall status: {report['overall_status']} "
               f"({report['gates_passed']}/{report['gates_total']} gates passed) "
               f"in {seconds:.0f} s")
    for failed in report["failed_gates"]:
        typer.echo(f"  failed: {failed}")
    if report.get("promotion"):
        from tasks.report import promotion_check

        p = report["promotion"]
        typer.echo(f"Registry:   {p['model_name']} {promotion_check(p).value}")
    typer.echo(f"Report:     {report['markdown']}")
    typer.echo(f"            {report['json']}")
    typer.echo(f"MLflow run: {tracking['run_id']} (experiment {tracking['experiment_id']}) "
               f"in {uri}")
    page = f"#/experiments/{tracking['experiment_id']}/runs/{tracking['run_id']}"
    if uri.startswith("sqlite:"):
        typer.echo(f"Browse:     mlflow ui --backend-store-uri {uri}  -> http://127.0.0.1:5000/"
                   f"{page}")
    elif uri.startswith(("http://", "https://")):
        typer.echo(f"Browse:     {uri.rstrip('/')}/{page}")


data_app = typer.Typer(help="Generate, import and validate datasets (HDF5 layout in README).",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")

ParamOpt = Annotated[list[str] | None, typer.Option(
    "--param", help="PDE parameter, e.g. --param nu=0.01 (repeatable)")]


def _params(items: list[str] | None) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in parse_overrides(items or []).items()}
    except (TypeError, ValueError) as e:
        raise typer.BadParameter(f"--param takes name=number: {e}") from e


def _validate_file(path: Path, tolerances: dict[str, float]) -> bool:
    """Run the file's PDE suite; print the verdict and the failures; True when it passes."""
    from tasks.validate import failures, validate_file

    df, gen, result = validate_file(path, tolerances)
    stats = result["statistics"]
    typer.echo(f"{path}: {gen['pde']}, {len(df)} samples: {stats['successful_expectations']}/"
               f"{stats['evaluated_expectations']} expectations met")
    for line in failures(result):
        typer.echo(f"  FAILED {line}")
    return bool(result["success"])


TolOpt = Annotated[float, typer.Option(help="relative residual allowed (Darcy)")]
ResimOpt = Annotated[float, typer.Option(help="relative re-simulation error allowed")]


@data_app.command("generate")
def data_generate(
    pde: Annotated[str, typer.Option(help="darcy, burgers, ks or navier_stokes")],
    n: Annotated[int, typer.Option(help="number of samples")],
    out: Annotated[Path, typer.Option(help="HDF5 file to write")],
    resolution: Annotated[int | None, typer.Option(help="grid points per side")] = None,
    seed: int = 0, split: str = "generated", param: ParamOpt = None,
) -> None:
    """Generate N samples of a PDE into one HDF5 file (progress bar on a terminal)."""
    from tqdm import tqdm

    from pdes.dataset import save_dataset
    from pdes.registry import build_split, generating_config, get_spec

    try:
        res = resolution or get_spec(pde).default_resolution
        gen = generating_config(pde, split, n, res, seed, _params(param))
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    t0 = time.perf_counter()
    with tqdm(total=n, desc=pde, unit="sample") as bar:
        ds = build_split(gen, progress=bar.update)
    save_dataset(out, ds)
    typer.echo(f"{out}: {ds.n_samples} {pde} samples at {ds.resolution} in "
               f"{time.perf_counter() - t0:.1f} s, content hash {ds.content_hash[:16]}")


@data_app.command("validate")
def data_validate(file: Path, residual_tol: TolOpt = 1e-8, resim_tol: ResimOpt = 1e-8) -> None:
    """Run the PDE's expectation suite on FILE; exit 1 listing failed expectations and samples."""
    if not _validate_file(file, {"residual_tol": residual_tol, "resim_tol": resim_tol}):
        raise typer.Exit(code=1)


@data_app.command("import")
def data_import(
    src: Path, out: Annotated[Path, typer.Option(help="HDF5 file to write")],
    pde: Annotated[str | None, typer.Option(help="PDE of the file (inferred for PDEBench)")] = None,
    param: ParamOpt = None, residual_tol: TolOpt = 1e-8, resim_tol: ResimOpt = 1e-8,
) -> None:
    """Import a PDEBench HDF5 file or a PyTorch tensor-dict file, then validate it."""
    from pdes.dataset import save_dataset
    from pno.importers import import_file

    try:
        ds = import_file(src, pde, _params(param))
    except ValueError as e:
        typer.echo(f"cannot import: {e}", err=True)
        raise typer.Exit(code=1) from e
    save_dataset(out, ds)
    typer.echo(f"{out}: imported {ds.n_samples} {ds.pde} samples at {ds.resolution}")
    if not _validate_file(out, {"residual_tol": residual_tol, "resim_tol": resim_tol}):
        raise typer.Exit(code=1)


@app.command("config")
def show_config(preset: PresetOpt = "default", set_: SetOpt = None,
                out: OutOpt = None, pde: PdeOpt = None, method: MethodOpt = None) -> None:
    """Print the resolved configuration as JSON (preset plus overrides)."""
    cfg = _config(preset, set_, out, pde, method)
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))


class _StopRequested(Exception):
    """SIGINT/SIGTERM reached ``pno up``."""


def _stop_on_signals() -> None:
    """The first SIGINT/SIGTERM raises :class:`_StopRequested`; later ones are ignored, so that
    stopping the stack (bounded: grace period, then SIGKILL) is never cut short."""

    def handler(signum: int, frame: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise _StopRequested(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _announce(stack: Stack) -> None:
    typer.echo(f"Prefect UI:  {stack.prefect_url}  (API {stack.prefect_api_url})")
    typer.echo(f"MLflow UI:   {stack.mlflow_url}")
    typer.echo(f"State:       {stack.state_dir}  (logs in {stack.logs})")
    typer.echo("Use them from another shell (or `source " f"{stack.state_dir / 'env.sh'}`):")
    typer.echo(f"  {stack.export_lines()}")


@app.command()
def up(
    state_dir: Annotated[Path, typer.Option(help="databases, artifacts and logs")] = Path(
        "pno-output/stack"),
    prefect_port: Annotated[int | None, typer.Option(help="default: a free port")] = None,
    mlflow_port: Annotated[int | None, typer.Option(help="default: a free port")] = None,
    worker: Annotated[bool, typer.Option(help="also create the pno-process work pool, deploy "
                                         "prefect.yaml and start a worker")] = False,
    project_dir: Annotated[Path, typer.Option(help="folder with prefect.yaml (--worker)")] = Path(
        "."),
    timeout: Annotated[float, typer.Option(help="seconds each server may take to start")] = 180,
) -> None:
    """Start a Prefect server and an MLflow tracking server on loopback (SQLite databases and
    artifacts under --state-dir), print their URLs, and stop both (and the worker) on Ctrl-C or
    SIGTERM, leaving no process behind."""
    stack = Stack(state_dir, prefect_port, mlflow_port, timeout=timeout)
    _stop_on_signals()
    code = 0
    try:
        typer.echo("Starting Prefect and MLflow servers (about 20-40 s) ...")
        stack.start()
        _announce(stack)
        if worker:
            names = re.findall(r"prefect deployment run '([^']+)'", stack.deploy(project_dir))
            typer.echo(f"Deployed:    {', '.join(dict.fromkeys(names))}")
            stack.start_worker(project_dir)
            typer.echo(f"Worker:      polls work pool pno-process "
                       f"(log {stack.logs / 'prefect-worker.log'})")
        typer.echo("Ctrl-C stops everything.")
        while not (dead := stack.dead()):
            time.sleep(1.0)
        raise dead[0].failure("stopped unexpectedly")
    except _StopRequested as e:
        typer.echo(f"{e.args[0]}: stopping the stack ...")
    except StackError as e:
        typer.echo(f"pno up: {e}", err=True)
        code = 1
    finally:
        stack.stop()
    typer.echo("Stopped.")
    raise typer.Exit(code=code)


if __name__ == "__main__":
    app()
