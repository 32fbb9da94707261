"""The ``pno`` command line."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer

# Offline by default: nothing here should try the network (set before prefect/mlflow import).
OFFLINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # the temporary local Prefect server can miss its default 20 s start-up limit under load
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "GX_ANALYTICS_ENABLED": "false",
}
for _key, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)

from pno.config import PRESETS, PipelineConfig, build_config, parse_overrides  # noqa: E402

app = typer.Typer(help="PNO Physics Bench: probabilistic neural operators, checked end to end.",
                  no_args_is_help=True, add_completion=False)

PresetOpt = Annotated[str, typer.Option("--preset", "-p",
                                        help=f"named configuration: {', '.join(PRESETS)}")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", help="override a setting, e.g. --set train.epochs=5 (repeatable)")]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", "-o", help="output folder (data, checkpoints, reports); default ./pno-output")]


def _config(preset: str, sets: list[str] | None, out: Path | None) -> PipelineConfig:
    overrides = parse_overrides(sets or [])
    if out is not None:
        overrides["output_dir"] = str(out)
    try:
        return build_config(preset, overrides)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


@app.command()
def run(preset: PresetOpt = "default", set_: SetOpt = None, out: OutOpt = None) -> None:
    """Run the robustness pipeline (data, expectations, training, evaluation, drift, resilience,
    report) on Prefect's local temporary server, logging to MLflow."""
    cfg = _config(preset, set_, out)
    uri = cfg.resolved_tracking_uri()
    typer.echo(f"pno run: preset={preset}, output={cfg.output_dir.resolve()}, MLflow={uri}")
    from flows.robustness import robustness_pipeline  # imports prefect and mlflow (seconds)

    t0 = time.perf_counter()
    result = robustness_pipeline(cfg)
    report, tracking = result["report"], result["tracking"]
    typer.echo("")
    typer.echo(f"Overall status: {report['overall_status']} "
               f"({report['gates_passed']}/{report['gates_total']} gates passed) "
               f"in {time.perf_counter() - t0:.0f} s")
    for failed in report["failed_gates"]:
        typer.echo(f"  failed: {failed}")
    typer.echo(f"Report:     {report['markdown']}")
    typer.echo(f"            {report['json']}")
    typer.echo(f"MLflow run: {tracking['run_id']} (experiment {tracking['experiment_id']}) "
               f"in {uri}")
    if uri.startswith("sqlite:"):
        typer.echo(f"Browse:     mlflow ui --backend-store-uri {uri}  -> http://127.0.0.1:5000/#/"
                   f"experiments/{tracking['experiment_id']}/runs/{tracking['run_id']}")
    if report["overall_status"] != "PASS":
        raise typer.Exit(code=2)


@app.command("config")
def show_config(preset: PresetOpt = "default", set_: SetOpt = None,
                out: OutOpt = None) -> None:
    """Print the resolved configuration as JSON (preset plus overrides)."""
    typer.echo(json.dumps(_config(preset, set_, out).model_dump(mode="json"), indent=2))


if __name__ == "__main__":
    app()
