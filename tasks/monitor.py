"""Drift monitor tasks: find new data files in a landing folder, check them against the
registry's champion (Great Expectations, Evidently, scores) and keep a ledger of what was done.

The ledger (``<landing>/.state/ledger.json``) is keyed by the sha256 of a file's bytes and is
written only after a file's results are in MLflow: a rerun never counts a file twice (renamed or
copied files included), and a run that crashes leaves the file for the next one. A file that
cannot be opened yet (still being copied, say) is left alone and reported; a file that opens but
breaks its expectations is recorded as processed with its failures, and not tried again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from mlflow.tracking import MlflowClient
from prefect import task

from tasks import task_logger
from tasks.promotion import find_champion

#: suffixes of data files picked up in the landing folder (hidden files are ignored)
DATA_SUFFIXES = (".h5", ".hdf5")
REFERENCE_ARTIFACT = "reference/features_train.csv"


def file_sha256(path: Path) -> str:
    """sha256 hex digest of the file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def metric_key(path: Path, sha256: str) -> str:
    """A name for the file in MLflow keys: its stem (characters MLflow rejects replaced) and the
    start of its hash, so two files of the same name stay apart."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', Path(path).stem)}-{sha256[:8]}"


def load_ledger(path: Path) -> dict[str, dict]:
    """The ledger ``{sha256: entry}``; empty when it does not exist yet."""
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def write_ledger(path: Path, ledger: dict[str, dict]) -> None:
    """Write the ledger atomically (temp file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(ledger, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _readable(path: Path) -> str | None:
    """None when the file opens as a dataset (valid or not); else why it cannot be opened."""
    from pdes.dataset import load_dataset

    try:
        load_dataset(path, verify=False)
    except OSError as e:
        return f"cannot be read: {e}"
    except ValueError as e:  # not HDF5 (yet): the open itself failed
        if isinstance(e.__cause__, OSError):
            return str(e)
    return None


@task(name="scan-landing", retries=2, retry_delay_seconds=[1, 4])
def scan_landing(landing_dir: Path, ledger_path: Path) -> dict:
    """Data files in ``landing_dir`` not in the ledger: ``new`` (path, sha256, key) and
    ``unreadable`` (path, why; left for a later run), plus the count already processed."""
    ledger = load_ledger(ledger_path)
    files = sorted(p for p in Path(landing_dir).glob("*") if p.is_file()
                   and p.suffix.lower() in DATA_SUFFIXES and not p.name.startswith("."))
    new, unreadable, seen = [], [], 0
    for p in files:
        sha = file_sha256(p)
        if sha in ledger:
            seen += 1
        elif (why := _readable(p)) is not None:
            unreadable.append({"path": str(p), "why": why})
        elif sha not in {f["sha256"] for f in new}:  # the same bytes twice: count once
            new.append({"path": str(p), "sha256": sha, "key": metric_key(p, sha)})
    task_logger().info("%s: %d new, %d unreadable (left for later), %d already processed",
                       landing_dir, len(new), len(unreadable), seen)
    return {"new": new, "unreadable": unreadable, "seen": seen}


@task(name="fetch-champion", retries=2, retry_delay_seconds=[1, 4])
def fetch_champion(tracking_uri: str, model_name: str, pde: str, out_dir: Path) -> dict | None:
    """The champion of ``model_name`` with its training reference features and checkpoint
    downloaded into ``out_dir``; None when there is no champion yet."""
    client = MlflowClient(tracking_uri)
    champion = find_champion(client, model_name)
    if champion is None:
        return None
    run_pde = client.get_run(champion["run_id"]).data.params.get("data.pde", pde)
    if run_pde != pde:
        raise ValueError(f"{model_name} v{champion['version']} was trained on {run_pde!r}; the "
                         f"monitor is configured for {pde!r}")
    checkpoint = champion["tags"].get("checkpoint")
    if checkpoint is None:
        raise ValueError(f"{model_name} v{champion['version']} has no 'checkpoint' tag (the "
                         "artifact path of its checkpoint); register it with the pipeline")
    dst = Path(out_dir) / f"v{champion['version']}"
    dst.mkdir(parents=True, exist_ok=True)
    return {**champion, "model_name": model_name,
            "reference": client.download_artifacts(champion["run_id"], REFERENCE_ARTIFACT,
                                                   str(dst)),
            "checkpoint": client.download_artifacts(champion["run_id"], checkpoint, str(dst))}


@task(name="check-file", task_run_name="check-{key}")
def check_file(path: str, key: str, pde: str, out_dir: Path) -> dict:
    """Validate one landed file with its PDE's suite: ``valid``, ``failures`` (what was wrong),
    and the GX result and feature table written under ``out_dir``."""
    from tasks.validate import failures, validate_file

    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        df, gen, result = validate_file(Path(path))
    except ValueError as e:  # opens, but not in the dataset layout
        return {"valid": False, "failures": [f"not a dataset in the documented layout: {e}"],
                "gx": None, "features": None, "n_samples": 0}
    gx_path, features_path = out_dir / "gx.json", out_dir / "features.csv"
    gx_path.write_text(json.dumps(result, indent=1, default=str))
    df.to_csv(features_path, index_label="sample")
    problems = failures(result)
    if gen["pde"] != pde:
        problems.insert(0, f"PDE {gen['pde']!r}, but the monitored model is for {pde!r}")
    stats = result["statistics"]
    return {"valid": not problems, "failures": problems, "gx": str(gx_path),
            "features": str(features_path), "n_samples": len(df),
            "expectations_met": stats["successful_expectations"],
            "expectations": stats["evaluated_expectations"]}


@task(name="score-champion", task_run_name="score-{key}")
def score_champion(checkpoint: str, path: str, key: str, n_samples: int, level: float,
                   threads: int) -> dict[str, float]:
    """Scores of the champion's checkpoint (loaded with weights_only=True) on the file's inputs
    against its targets: relative L2 and RMSE of the mean, CRPS, coverage, ... (see
    ``model.evaluate.predict_split``)."""
    import torch

    from model.evaluate import score_model
    from model.train import build_model, load_checkpoint
    from tasks.train import load_tensors

    torch.set_num_threads(threads)
    x, y = load_tensors(path)
    return score_model(build_model(load_checkpoint(Path(checkpoint))), x, y, n_samples, level)


def file_metrics(key: str, record: dict) -> dict[str, float]:
    """MLflow metrics of one processed file, prefixed with its key."""
    out = {f"{key}.valid": int(record["valid"]), f"{key}.n_samples": record["n_samples"]}
    if "expectations" in record:
        out[f"{key}.expectations_met"] = record["expectations_met"]
        out[f"{key}.expectations"] = record["expectations"]
    if record.get("drift"):
        out[f"{key}.drift.drifted_share"] = record["drift"]["drifted_share"]
        out[f"{key}.drift.dataset_drift"] = int(record["drift"]["dataset_drift"])
    out.update({f"{key}.score.{k}": v for k, v in (record.get("scores") or {}).items()})
    return out


@task(name="record-processed", task_run_name="record-{key}", retries=2,
      retry_delay_seconds=[1, 4])
def record_processed(ledger_path: Path, sha256: str, key: str, entry: dict) -> None:
    """Add the file to the ledger (call only after its results are logged)."""
    ledger = load_ledger(ledger_path)
    ledger[sha256] = {**entry, "key": key,
                      "processed_at": datetime.now(UTC).isoformat(timespec="seconds")}
    write_ledger(ledger_path, ledger)


@task(name="start-monitor-run", retries=2, retry_delay_seconds=[1, 4])
def start_monitor_run(tracking_uri: str, experiment: str, run_name: str,
                      tags: dict[str, str]) -> str:
    """A new MLflow run tagged ``pipeline=monitor`` (and ``tags``); returns its id."""
    from tasks.tracking import experiment_id

    client = MlflowClient(tracking_uri)
    exp_id = experiment_id(client, tracking_uri, experiment)
    return client.create_run(exp_id, run_name=run_name,
                             tags={"pipeline": "monitor", **tags}).info.run_id


@task(name="summarize-monitor")
def summarize(records: list[dict], unreadable: list[dict], out_dir: Path) -> dict:
    """summary.json of the run (every file's record) and the run's totals as metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "summary.json"
    path.write_text(json.dumps({"files": records, "unreadable": unreadable}, indent=1,
                               default=str))
    drifted = [r["file"] for r in records if (r.get("drift") or {}).get("dataset_drift")]
    metrics = {"files.processed": len(records),
               "files.invalid": sum(not r["valid"] for r in records),
               "files.drifted": len(drifted), "files.unreadable": len(unreadable)}
    return {"summary": str(path), "metrics": metrics, "drifted": drifted}
