"""The whole pipeline under a Prefect test server: an MLflow run with every artifact, repeatable
numbers, gates that really fail, and nothing lost when a stage fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.robustness import robustness_pipeline
from pno.config import build_config
from tasks.tracking import list_artifacts

pytestmark = pytest.mark.slow


def smoke(tmp_path: Path, out: str, **overrides) -> object:  # noqa: ANN003
    return build_config("smoke", {"output_dir": str(tmp_path / out),
                                  "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                  **overrides})


@pytest.fixture(scope="module")
def first_run(prefect_server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("flow")
    return tmp, robustness_pipeline(smoke(tmp, "a"))


def test_run_produces_an_mlflow_run_with_every_artifact(first_run):
    tmp, result = first_run
    uri, run_id = result["tracking"]["tracking_uri"], result["tracking"]["run_id"]
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["data.resolution"] == "16"
    for key in ("pno-dropout.crps", "pno-dropout.energy_score", "pno-dropout.nll",
                "pno-dropout.coverage_90", "pno-dropout.width_90", "fno.rel_l2",
                "drift.drifted_share", "load.p95_ms", "report.gates_passed"):
        assert key in run.data.metrics, key
    assert "fno.coverage_90" not in run.data.metrics  # a deterministic model claims no coverage
    artifacts = list_artifacts(uri, run_id)
    for expected in ("report/report.json", "report/report.md", "expectations/gx_train.json",
                     "drift/drift_report.html", "plots/pno-dropout_sample.png",
                     "plots/reliability.png", "plots/pit.png", "report/comparison.csv"):
        assert expected in artifacts, expected
    assert any(a.startswith("checkpoints/pno-dropout-") for a in artifacts)
    assert "reference/features_train.csv" in artifacts  # the drift monitor's reference
    # the first passing run is registered and becomes the champion
    champion = MlflowClient(uri).get_model_version_by_alias("pno-darcy-smoke", "champion")
    assert champion.run_id == run_id and champion.tags["promoted"] == "true"
    assert run.data.metrics["registry.promoted"] == 1
    # artifacts live beside the SQLite store, not in the working directory
    assert (tmp / "mlruns").is_dir() and not Path("mlruns").exists()


def test_report_lines_are_measured(first_run):
    _, result = first_run
    report = json.loads(Path(result["report"]["json"]).read_text())
    assert report["overall_status"] == "PASS"
    statuses = {c["status"] for c in report["checks"]}
    assert statuses <= {"PASS", "FAIL", "INFO", "NOT_IMPLEMENTED"}
    for c in report["checks"]:
        if c["status"] in ("PASS", "FAIL"):
            assert c["value"] is not None and c["threshold"] != "-", c
        if c["status"] == "NOT_IMPLEMENTED":
            assert not c["gate"]
    stages = next(c for c in report["checks"] if c["name"] == "stages that left their outputs")
    assert stages["status"] == "PASS" and stages["value"].count(",") == 5
    retry = next(c for c in report["checks"] if c["name"].startswith("transient fault"))
    assert retry["value"] == "Completed after 3 attempts"
    assert report["scores"]["pno-dropout"]["n"] == 8
    vs_champion = next(c for c in report["checks"] if "vs the champion" in c["name"])
    assert vs_champion["status"] == "PASS" and "no champion yet" in vs_champion["value"]
    assert report["promotion"]["promoted"] and report["promotion"]["version"] == "1"
    md = Path(result["report"]["markdown"]).read_text()
    assert "- Model registry: v1 promoted to champion" in md
    for section in ("Error handling", "Monitoring", "Security", "Quality gates", "Infrastructure",
                    "End-to-end", "Resilience", "Uncertainty scores"):
        assert f"## {section}" in md


def test_rerun_gives_same_data_hash_and_scores(first_run):
    tmp, first = first_run
    second = robustness_pipeline(smoke(tmp, "b"))  # fresh folder: regenerate and retrain
    r1 = json.loads(Path(first["report"]["json"]).read_text())
    r2 = json.loads(Path(second["report"]["json"]).read_text())
    hashes = [[c["value"].split()[0] for c in r["checks"] if "content hash" in c["name"]]
              for r in (r1, r2)]
    assert hashes[0] == hashes[1] and len(hashes[0]) == 5
    for method, scores in r1["scores"].items():
        for key, value in scores.items():
            assert r2["scores"][method][key] == pytest.approx(value, rel=1e-5, abs=1e-9), key


def test_failed_gate_fails_the_report_and_reuses_cache(first_run):
    tmp, _ = first_run
    third = robustness_pipeline(smoke(tmp, "a", gates={"max_rel_l2": 1e-4}))
    report = json.loads(Path(third["report"]["json"]).read_text())
    assert report["overall_status"] == "FAIL"
    assert any("relative L2" in f for f in report["failed_gates"])
    data_lines = [c["value"] for c in report["checks"] if "content hash" in c["name"]]
    assert all("cache hit" in v for v in data_lines)
    training = [c["value"] for c in report["checks"] if c["name"].endswith(": training")]
    assert training and all("reused a finished checkpoint" in v for v in training)
    # registered, but the champion stays where it was, and the version says why
    promotion = report["promotion"]
    assert not promotion["promoted"] and "relative L2 of the mean" in promotion["reason"]
    client = MlflowClient(third["tracking"]["tracking_uri"])
    version = client.get_model_version("pno-darcy-smoke", promotion["version"])
    assert version.run_id == third["tracking"]["run_id"] and version.tags["gates"] == "FAIL"
    assert str(client.get_model_version_by_alias("pno-darcy-smoke", "champion").version) \
        == promotion["champion"] != promotion["version"]


def test_invalid_data_stops_before_training(prefect_server, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch):
    import tasks.validate

    real = tasks.validate.sample_features

    def poisoned(ds, **kw):  # noqa: ANN001, ANN003, ANN202
        feats = real(ds, **kw)
        feats["residual"][2] = 1.0  # sample 2 "does not satisfy the PDE"
        return feats

    monkeypatch.setattr(tasks.validate, "sample_features", poisoned)
    cfg = smoke(tmp_path, "bad")
    with pytest.raises(Exception, match=r"residual.*samples \[2\]"):
        robustness_pipeline(cfg)
    assert not (tmp_path / "bad" / "checkpoints").exists()  # training never started
    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    run = client.search_runs([exp.experiment_id], order_by=["start_time DESC"])[0]
    assert run.info.status == "FAILED"
    kept = list_artifacts(cfg.tracking_uri, run.info.run_id)
    assert any(a.endswith("gx_train.json") for a in kept)  # the failing result was kept


@pytest.mark.parametrize("pde", ["burgers", "ks", "navier_stokes"])
def test_every_pde_runs_the_whole_pipeline(prefect_server, tmp_path: Path, pde: str):
    cfg = build_config("smoke", {"output_dir": str(tmp_path / pde),
                                 "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                 "data": {"pde": pde}})
    result = robustness_pipeline(cfg)
    report = json.loads(Path(result["report"]["json"]).read_text())
    assert report["overall_status"] == "PASS", report["failed_gates"]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["expectations met on train"]["status"] == "PASS"
    assert checks["no input shared between samples or splits (leakage)"]["status"] == "PASS"
    assert report["scores"]["pno-dropout"]["n"] == 8
    # rollouts over the rollout split, calibrated coverage gated, every figure on disk
    steps = cfg.data.rollout_steps
    rollouts = {e["label"]: e["rollout"] for e in report["evaluation"]}
    assert len(rollouts["pno-dropout"]["steps"]) == len(rollouts["fno"]["steps"]) == steps
    assert rollouts["pno-dropout"]["steps"][0]["relative_spread"] > 0
    assert "calibrated (conformal) coverage" in " ".join(checks)
    assert all(Path(p).is_file() for p in report["figures"])
    assert any(p.endswith("rollout.png") for p in report["figures"])


def test_seeds_give_mean_and_spread_in_the_comparison(prefect_server, tmp_path: Path):
    import csv

    result = robustness_pipeline(smoke(tmp_path, "s", train={"n_seeds": 2}))
    report = json.loads(Path(result["report"]["json"]).read_text())
    labels = {f"{m}-seed{s}" for m in ("fno", "pno-dropout") for s in (0, 1)}
    assert set(report["scores"]) == labels
    row = next(r for r in report["comparison"] if r["method"] == "pno-dropout")
    reps = [report["scores"][f"pno-dropout-seed{s}"]["crps"] for s in (0, 1)]
    assert row["n_seeds"] == 2 and reps[0] != reps[1]
    assert row["crps"] == pytest.approx(sum(reps) / 2)
    assert row["crps_std"] == pytest.approx(abs(reps[0] - reps[1]) / 2**0.5)
    assert "±" in Path(result["report"]["markdown"]).read_text()
    with open(result["report"]["csv"]) as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["fno", "pno-dropout"]


def test_every_method_runs_the_whole_pipeline(prefect_server, tmp_path: Path):
    """All seven methods train, are scored and reach the report and MLflow; deterministic ones
    claim no coverage."""
    from model.methods import METHODS

    methods = list(METHODS)
    result = robustness_pipeline(smoke(tmp_path, "m", train={"methods": methods,
                                                             "serve": "ensemble"}))
    report = json.loads(Path(result["report"]["json"]).read_text())
    assert set(report["scores"]) == set(methods)
    rows = {r["method"]: r for r in report["comparison"]}
    assert rows["fno"]["coverage_90"] is None and rows["ensemble"]["coverage_90"] is not None
    markdown = Path(result["report"]["markdown"]).read_text()
    assert all(f"| {m} | " in markdown for m in methods)
    run = MlflowClient(result["tracking"]["tracking_uri"]).get_run(result["tracking"]["run_id"])
    for m in methods:
        assert f"{m}.rel_l2" in run.data.metrics, m
        probabilistic = f"{m}.coverage_90" in run.data.metrics
        assert probabilistic == (m not in ("fno", "deeponet")), m
    artifacts = list_artifacts(result["tracking"]["tracking_uri"], result["tracking"]["run_id"])
    assert any(a.startswith("checkpoints/ensemble-") for a in artifacts)


def test_sigterm_during_training_checkpoints_and_exits_143(tmp_path: Path):
    """``pno run`` as a scheduler would stop it: SIGTERM while training. The batch in flight
    finishes, a checkpoint is written, the MLflow run is marked failed, the exit status is 143."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from model.train import load_checkpoint

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pno.cli", "run", "--preset", "smoke", "--out", str(out),
           "--set", "train.epochs=500", "--set", f"tracking_uri=sqlite:///{tmp_path / 'm.db'}"]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # its own server
    env["PREFECT_HOME"] = str(tmp_path / "prefect")  # write nothing outside tmp_path
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        ckpts: list[Path] = []
        while time.monotonic() < deadline and proc.poll() is None and not ckpts:
            ckpts = list((out / "checkpoints").glob("fno-*.pt"))
            time.sleep(0.1)
        assert ckpts, "training never wrote a checkpoint"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:  # never leave the run (or its Prefect server) behind, even when an assertion fails
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 143, output
    assert "stopped by SIGTERM" in output and "rerun the same command to resume" in output
    ckpt = load_checkpoint(ckpts[0])
    assert 1 <= ckpt["epoch"] < 500 and not ckpt["finished"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    runs = client.search_runs([client.get_experiment_by_name("pno-physics-bench").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
