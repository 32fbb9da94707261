"""The drift monitor against a champion registered the way the pipeline does it (tiny PNO-D, its
training features as the reference): a shifted file is flagged and an in-distribution one is
not, the champion is scored, a rerun counts nothing twice, a file that breaks its expectations
is recorded as invalid, an unreadable one waits, and a crash leaves its file for the next run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.monitor import drift_monitor
from model.evaluate import score_model
from model.train import build_model, load_checkpoint
from pdes.dataset import make_dataset, save_dataset
from pdes.registry import build_split, generating_config
from pno.config import MonitorConfig
from tasks.monitor import (
    check_file,
    fetch_champion,
    file_sha256,
    load_ledger,
    metric_key,
    record_processed,
    scan_landing,
)
from tasks.promotion import compare_with_champion, register_model_version
from tasks.tracking import experiment_id, list_artifacts, log_model
from tasks.train import load_tensors
from tasks.validate import feature_table

NAME = "pno-darcy"


def darcy_file(path: Path, n: int, seed: int, target_scale: float = 1.0,
               **params: float) -> Path:
    """A 16x16 Darcy file in the dataset layout; ``target_scale`` != 1 breaks the PDE."""
    ds = build_split(generating_config("darcy", "monitor", n, 16, seed, params))
    if target_scale != 1.0:
        ds = make_dataset(ds.pde, ds.split, ds.seed, ds.inputs, ds.targets * target_scale,
                          ds.grid, ds.config, ds.parameters)
    save_dataset(path, ds)
    return path


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> dict:
    """A robustness-like run (reference features, checkpoint, logged model) registered as v1
    and promoted by the promotion task, in a SQLite store of its own."""
    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(experiment_id(client, uri, "pno-physics-bench")).info.run_id
    client.log_param(run_id, "data.pde", "darcy")
    client.log_metric(run_id, "pno-dropout.rel_l2", 0.5)
    features, _ = feature_table(darcy_file(tmp / "train.h5", 48, seed=11))
    features.to_csv(tmp / "features_train.csv", index_label="sample")
    client.log_artifact(run_id, str(tmp / "features_train.csv"), "reference")
    client.log_artifact(run_id, str(tiny_checkpoint), "checkpoints")
    logged = log_model.fn(uri, run_id, str(tiny_checkpoint), (16, 16))
    comparison = compare_with_champion.fn(uri, NAME, "pno-dropout", [
        {"label": "pno-dropout", "scores": {"rel_l2": 0.5}}], 1.1)
    promotion = register_model_version.fn(uri, run_id, logged, comparison,
                                          {"overall_status": "PASS", "failed_gates": []},
                                          str(tiny_checkpoint))
    assert promotion["promoted"]
    return {"uri": uri, "version": promotion["version"], "checkpoint": tiny_checkpoint}


def monitor_config(champion: dict, tmp_path: Path, landing: str = "landing") -> MonitorConfig:
    return MonitorConfig(landing_dir=tmp_path / landing, tracking_uri=champion["uri"],
                         output_dir=tmp_path / "monitor", n_samples=8)


def monitor_runs(uri: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("pno-monitor")
    return client.search_runs([exp.experiment_id]) if exp else []


def test_scan_skips_unreadable_hidden_and_duplicate_files(tmp_path: Path):
    landing = darcy_file(tmp_path / "landing" / "a.h5", 8, seed=1).parent
    shutil.copy(landing / "a.h5", landing / "a_copy.h5")  # the same bytes under another name
    shutil.copy(landing / "a.h5", landing / ".a.h5.tmp")  # a writer's temporary file
    (landing / "truncated.h5").write_bytes((landing / "a.h5").read_bytes()[:3000])
    (landing / "garbage.h5").write_bytes(b"not an HDF5 file")
    (landing / "notes.txt").write_text("not data")
    ledger = landing / ".state" / "ledger.json"
    scan = scan_landing.fn(landing, ledger)
    sha = file_sha256(landing / "a.h5")
    assert scan["new"] == [{"path": str(landing / "a.h5"), "sha256": sha,
                            "key": metric_key(landing / "a.h5", sha)}]
    assert sorted(Path(u["path"]).name for u in scan["unreadable"]) == ["garbage.h5",
                                                                       "truncated.h5"]
    record_processed.fn(ledger, sha, "a", {"status": "ok"})
    again = scan_landing.fn(landing, ledger)
    assert again["new"] == [] and again["seen"] == 2 and len(again["unreadable"]) == 2
    assert load_ledger(ledger)[sha]["status"] == "ok"


def test_check_file_reports_broken_expectations_and_a_foreign_pde(tmp_path: Path):
    bad = check_file.fn(str(darcy_file(tmp_path / "bad.h5", 8, 2, target_scale=1.5)), "bad",
                        "darcy", tmp_path / "bad")
    assert not bad["valid"] and bad["expectations_met"] < bad["expectations"]
    assert any("residual" in f for f in bad["failures"]), bad["failures"]
    assert Path(bad["gx"]).is_file()
    good = darcy_file(tmp_path / "good.h5", 8, 3)
    assert check_file.fn(str(good), "good", "darcy", tmp_path / "good")["valid"]
    foreign = check_file.fn(str(good), "good", "ks", tmp_path / "ks")
    assert foreign["failures"] == ["PDE 'darcy', but the monitored model is for 'ks'"]


def test_no_champion_yet(tmp_path: Path):
    assert fetch_champion.fn(f"sqlite:///{tmp_path / 'm.db'}", NAME, "darcy", tmp_path) is None


@pytest.mark.slow
def test_monitor_flags_drift_scores_and_never_counts_twice(prefect_server, champion: dict,
                                                           tmp_path: Path):
    cfg = monitor_config(champion, tmp_path)
    files = {"in": darcy_file(cfg.landing_dir / "in_dist.h5", 24, seed=21),
             "shifted": darcy_file(cfg.landing_dir / "shifted.h5", 24, seed=22, high=24.0),
             "bad": darcy_file(cfg.landing_dir / "bad.h5", 24, seed=23, target_scale=1.5)}
    (cfg.landing_dir / "garbage.h5").write_bytes(b"still being copied")
    runs_before = len(monitor_runs(champion["uri"]))

    first = drift_monitor(cfg)
    records = {r["file"]: r for r in first["processed"]}
    assert set(records) == {"in_dist.h5", "shifted.h5", "bad.h5"}
    assert [Path(u["path"]).name for u in first["unreadable"]] == ["garbage.h5"]
    assert first["champion_version"] == champion["version"]
    assert records["in_dist.h5"]["drift"]["dataset_drift"] is False
    assert records["shifted.h5"]["drift"]["dataset_drift"] is True
    assert not records["bad.h5"]["valid"] and "scores" not in records["bad.h5"]

    run = MlflowClient(champion["uri"]).get_run(first["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["pipeline"] == "monitor"
    assert run.data.tags["champion_version"] == champion["version"]
    m, keys = run.data.metrics, {k: r["key"] for k, r in records.items()}
    assert m[f"{keys['in_dist.h5']}.drift.dataset_drift"] == 0
    assert m[f"{keys['shifted.h5']}.drift.dataset_drift"] == 1
    assert m[f"{keys['bad.h5']}.valid"] == 0
    model = build_model(load_checkpoint(champion["checkpoint"]))
    expected = score_model(model, *load_tensors(files["in"]), 8, 0.9)
    assert m[f"{keys['in_dist.h5']}.score.rel_l2"] == pytest.approx(expected["rel_l2"])
    assert m[f"{keys['shifted.h5']}.score.crps"] > 0
    assert (m["files.processed"], m["files.invalid"], m["files.drifted"],
            m["files.unreadable"]) == (3, 1, 1, 1)
    artifacts = list_artifacts(champion["uri"], first["run_id"])
    assert f"files/{keys['shifted.h5']}/drift_report.html" in artifacts
    assert f"files/{keys['bad.h5']}/gx.json" in artifacts and "summary/summary.json" in artifacts
    ledger = load_ledger(cfg.ledger_path)
    assert sorted(e["status"] for e in ledger.values()) == ["invalid", "ok", "ok"]

    shutil.copy(files["in"], cfg.landing_dir / "in_dist_again.h5")  # renamed, same bytes
    second = drift_monitor(cfg)
    assert second["processed"] == [] and second["run_id"] is None
    assert second["already_processed"] == 4 and len(second["unreadable"]) == 1
    assert len(monitor_runs(champion["uri"])) == runs_before + 1
    assert load_ledger(cfg.ledger_path) == ledger


@pytest.mark.slow
def test_a_crash_mid_run_leaves_the_file_for_the_next_run(prefect_server, champion: dict,
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    import tasks.train

    cfg = monitor_config(champion, tmp_path, "landing2")
    darcy_file(cfg.landing_dir / "a.h5", 16, seed=31)
    darcy_file(cfg.landing_dir / "b.h5", 16, seed=32)
    real = tasks.train.load_tensors

    def crash_on_b(path):  # noqa: ANN001, ANN202
        if Path(path).name == "b.h5":
            raise RuntimeError("injected crash while scoring b.h5")
        return real(path)

    monkeypatch.setattr(tasks.train, "load_tensors", crash_on_b)
    with pytest.raises(RuntimeError, match="injected crash"):
        drift_monitor(cfg)
    assert [e["file"] for e in load_ledger(cfg.ledger_path).values()] == ["a.h5"]
    failed = [r for r in monitor_runs(champion["uri"]) if r.info.status == "FAILED"]
    assert len(failed) == 1

    monkeypatch.undo()
    rerun = drift_monitor(cfg)
    assert [r["file"] for r in rerun["processed"]] == ["b.h5"]
    assert sorted(e["file"] for e in load_ledger(cfg.ledger_path).values()) == ["a.h5", "b.h5"]
