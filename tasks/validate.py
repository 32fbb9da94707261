"""Expectations stage: a per-sample feature table validated with a Great Expectations suite."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from prefect import task

import expectations
from pdes.dataset import load_dataset
from pdes.features import sample_features
from pdes.registry import get_spec
from tasks import task_logger


class DataValidationError(ValueError):
    """The data broke its expectation suite; the message names expectations and samples."""


def feature_table(path: Path) -> tuple[pd.DataFrame, dict]:
    """Features of every sample of the dataset at ``path`` (index = sample index) and its config.

    The content hash is not checked here: corrupted data must reach the suite, which says what is
    wrong with it, rather than stop at a hash mismatch.
    """
    ds = load_dataset(path, verify=False)
    return pd.DataFrame(sample_features(ds)), ds.config


def suite_parameters(gen: dict, residual_tol: float = 1e-8, resim_tol: float = 1e-8,
                     conservation_tol: float = 1e-10) -> dict:
    """Values for the suite's ``$PARAMETER`` placeholders: the generating config's numbers, the
    PDE's declared parameter ranges and the tolerances."""
    params = {k: v for k, v in gen.items() if isinstance(v, int | float)}
    for name, (lo, hi) in get_spec(gen["pde"]).ranges.items():
        params[f"{name}_min"], params[f"{name}_max"] = lo, hi
    return {**params, "residual_tol": residual_tol, "resim_tol": resim_tol,
            "conservation_tol": conservation_tol, "neg_conservation_tol": -conservation_tol}


def run_suite(df: pd.DataFrame, suite: dict, parameters: dict) -> dict:
    """Validate ``df`` against ``suite``; returns GX's result as a JSON dict."""
    import great_expectations as gx  # slow import (several seconds): only where it is needed

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    gx_suite = context.suites.add(gx.ExpectationSuite(**suite))
    asset = context.data_sources.add_pandas("features").add_dataframe_asset("table")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": df})
    result = batch.validate(gx_suite, expectation_parameters=parameters, result_format="COMPLETE")
    return result.to_json_dict()


def failures(result: dict, max_indices: int = 10) -> list[str]:
    """One line per failed expectation: type, column, why, offending sample indices."""
    lines = []
    for r in result["results"]:
        if r["success"]:
            continue
        conf = r["expectation_config"]
        col = conf["kwargs"].get("column", "<table>")
        idx = r.get("result", {}).get("unexpected_index_list") or []
        why = (conf.get("meta") or {}).get("why", "")
        shown = ", ".join(str(i) for i in idx[:max_indices]) + (" ..." if len(idx) > max_indices
                                                                 else "")
        observed = r.get("result", {}).get("observed_value")
        detail = f"samples [{shown}]" if idx else f"observed {observed}"
        lines.append(f"{conf['type']}({col}): {why}; {detail}")
    return lines


def validate_file(path: Path, tolerances: dict | None = None) -> tuple[pd.DataFrame, dict, dict]:
    """Feature table, generating config and GX result of the dataset at ``path`` against its
    PDE's suite (``tolerances``: residual_tol, resim_tol, conservation_tol)."""
    df, gen = feature_table(Path(path))
    params = suite_parameters(gen, **(tolerances or {}))
    return df, gen, run_suite(df, expectations.load_suite(gen["pde"]), params)


@task(name="validate-split", task_run_name="validate-{split}")
def validate_split(path: str, split: str, out_dir: Path, tolerances: dict | None = None) -> dict:
    """Validate one split; the GX result and the feature table are kept under ``out_dir`` even
    when validation fails, and a failure raises :class:`DataValidationError` (not retried).
    ``tolerances``: residual_tol, resim_tol, conservation_tol (see :func:`suite_parameters`)."""
    df, _, result = validate_file(Path(path), tolerances)
    out_dir.mkdir(parents=True, exist_ok=True)
    result_path = out_dir / f"gx_{split}.json"
    result_path.write_text(json.dumps(result, indent=1, default=str))
    features_path = out_dir / f"features_{split}.csv"
    df.to_csv(features_path, index_label="sample")
    stats = result["statistics"]
    task_logger().info("%s: %d/%d expectations met", split, stats["successful_expectations"],
                          stats["evaluated_expectations"])
    if not result["success"]:
        raise DataValidationError(f"split {split!r} ({path}) failed its expectations "
                                  f"(result kept in {result_path}):\n  "
                                  + "\n  ".join(failures(result)))
    return {"split": split, "result": str(result_path), "features": str(features_path),
            "evaluated": stats["evaluated_expectations"],
            "successful": stats["successful_expectations"], "success": True}


@task(name="check-leakage")
def check_leakage(features: dict[str, str], out_dir: Path) -> dict:
    """No input appears twice across all splits (``features``: split -> feature CSV); the GX
    result is kept, and duplicates raise :class:`DataValidationError` naming split and sample."""
    tables = [pd.read_csv(p, index_col="sample").assign(split=s) for s, p in features.items()]
    df = pd.concat(tables).reset_index()
    result = run_suite(df, expectations.load_suite("leakage"), {})
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "gx_leakage.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    dup = df[df.duplicated("input_hash", keep=False)]
    if not result["success"]:
        where = ", ".join(f"{r.split}[{r.sample}]" for r in dup.itertuples())
        raise DataValidationError(f"{len(dup)} samples share an input with another sample "
                                  f"(leakage or duplicates): {where} (result kept in {path})")
    return {"result": str(path), "rows": len(df), "duplicates": 0, "success": True}
