"""Expectations stage: a per-sample feature table validated with a Great Expectations suite."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from prefect import task

import expectations
from pdes.dataset import load_dataset
from pdes.features import darcy_features
from tasks import task_logger


class DataValidationError(ValueError):
    """The data broke its expectation suite; the message names expectations and samples."""


def feature_table(path: Path) -> tuple[pd.DataFrame, dict]:
    """Features of every sample of the dataset at ``path`` (index = sample index) and its config.

    The content hash is not checked here: corrupted data must reach the suite, which says what is
    wrong with it, rather than stop at a hash mismatch.
    """
    ds = load_dataset(path, verify=False)
    gen = ds.config
    feats = darcy_features(ds.inputs, ds.targets, forcing=gen["forcing"], low=gen["low"],
                           high=gen["high"])
    return pd.DataFrame(feats), gen


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


@task(name="validate-split", task_run_name="validate-{split}")
def validate_split(path: str, split: str, out_dir: Path, residual_tol: float = 1e-8) -> dict:
    """Validate one split; the GX result and the feature table are kept under ``out_dir`` even
    when validation fails, and a failure raises :class:`DataValidationError` (not retried)."""
    df, gen = feature_table(Path(path))
    params = {"n_samples": gen["n_samples"], "resolution": gen["resolution"],
              "a_low": gen["low"], "a_high": gen["high"], "residual_tol": residual_tol}
    result = run_suite(df, expectations.load_suite(gen["pde"]), params)
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
