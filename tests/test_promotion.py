"""Gated promotion: the champion gate and the decision by hand, then both paths against a real
MLflow registry (SQLite under tmp_path): a passing run moves ``champion`` to its version; a run
that fails a gate, or is worse than the champion, registers its version and leaves the champion
where it was, with the reason on the version and in the report."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from pno.config import build_config
from tasks.promotion import (
    CHAMPION,
    champion_gate,
    compare_with_champion,
    decide_promotion,
    register_model_version,
)
from tasks.report import champion_check, gate, promotion_check, record_promotion

NAME = "pno-darcy"


@pytest.mark.parametrize(("new", "old", "passed", "ratio"), [
    (0.105, 0.10, True, 1.05),
    (0.11, 0.10, True, 1.1),  # the threshold itself passes
    (0.12, 0.10, False, 1.2),
    (0.05, 0.10, True, 0.5),
    (float("nan"), 0.10, False, None),
])
def test_champion_gate_compares_with_the_ratio(new: float, old: float, passed: bool,
                                               ratio: float | None):
    out = champion_gate(new, {"version": "3", "rel_l2": old, "metric": "m"}, 1.10)
    assert out["passed"] is passed
    assert out["champion_version"] == "3" and out["champion_rel_l2"] == old
    if ratio is not None:
        assert out["ratio"] == pytest.approx(ratio)
        assert "(champion v3)" in out["value"]


def test_champion_gate_without_champion_or_metric():
    first = champion_gate(0.5, None, 1.1)
    assert first["passed"] and "no champion yet" in first["value"]
    assert first["champion_version"] is None
    blind = champion_gate(0.01, {"version": "2", "rel_l2": None, "metric": "fno.rel_l2"}, 1.1)
    assert not blind["passed"] and "v2 has no metric fno.rel_l2" in blind["value"]
    assert champion_gate(0.0, {"version": "1", "rel_l2": 0.0, "metric": "m"}, 1.1)["passed"]


def test_decide_promotion():
    assert decide_promotion("PASS", [], "1", "1") == {"promote": True,
                                                      "reason": "all gates passed"}
    assert decide_promotion("PASS", [], None, None)["promote"]
    no = decide_promotion("FAIL", ["Quality gates: a", "Monitoring: b"], "1", "1")
    assert not no["promote"] and no["reason"] == "failed gates: Quality gates: a; Monitoring: b"
    moved = decide_promotion("PASS", [], "1", "2")
    assert not moved["promote"] and "moved from v1 to v2" in moved["reason"]
    with pytest.raises(ValueError, match="inconsistent"):
        decide_promotion("PASS", ["x"], None, None)


def test_registered_model_name_per_pde_and_apart_for_smoke():
    assert build_config().registered_model_name == "pno-darcy"
    assert build_config("default", {"data": {"pde": "ks"}}).registered_model_name == "pno-ks"
    assert build_config("smoke").registered_model_name == "pno-darcy-smoke"
    mine = build_config("smoke", {"registry": {"model_name": "mine"}})
    assert mine.registered_model_name == "mine"
    with pytest.raises(ValueError, match="max_rel_l2_vs_champion"):
        build_config("default", {"registry": {"max_rel_l2_vs_champion": 0}})


def _pipeline_run(uri: str, metrics: dict[str, float]) -> tuple[str, dict]:
    """A finished 'pipeline' run with ``metrics`` and a tiny logged PyTorch model."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("e")
    exp_id = exp.experiment_id if exp else client.create_experiment("e")
    run_id = client.create_run(exp_id).info.run_id
    for k, v in metrics.items():
        client.log_metric(run_id, k, v)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(torch.nn.Linear(2, 2), name="model",
                                        serialization_format="pickle",
                                        pip_requirements=["torch"])
    return run_id, {"model_uri": info.model_uri, "model_id": info.model_id}


def _report(comparison: dict, other_failures: tuple[str, ...] = ()) -> dict:
    """The report's status as write_report computes it, from the champion gate and others."""
    checks = [champion_check(comparison), *(gate("Quality gates", n, 0, False, "-")
                                            for n in other_failures)]
    failed = [f"{c.section}: {c.name}" for c in checks if c.status == "FAIL"]
    return {"overall_status": "FAIL" if failed else "PASS", "failed_gates": failed}


def _run_through_registry(uri: str, rel_l2: float, other_failures: tuple[str, ...] = (),
                          ) -> tuple[str, dict, dict]:
    run_id, logged = _pipeline_run(uri, {"pno-dropout.rel_l2": rel_l2, "fno.rel_l2": 0.01})
    evaluation = [{"label": "pno-dropout", "scores": {"rel_l2": rel_l2}},
                  {"label": "fno", "scores": {"rel_l2": 0.01}}]
    comparison = compare_with_champion.fn(uri, NAME, "pno-dropout", evaluation, 1.10)
    report = _report(comparison, other_failures)
    promotion = register_model_version.fn(uri, run_id, logged, comparison, report,
                                          "/tmp/out/checkpoints/pno-dropout-0123abcd.pt")
    return run_id, comparison, promotion


def test_passing_run_promotes_failing_runs_keep_the_champion(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)

    run1, cmp1, p1 = _run_through_registry(uri, 0.10)
    assert cmp1["passed"] and "no champion yet" in cmp1["value"]
    assert p1 == {"model_name": NAME, "version": "1", "promoted": True,
                  "reason": "all gates passed", "previous_champion": None, "champion": "1"}
    champion = client.get_model_version_by_alias(NAME, CHAMPION)
    assert champion.version == 1 and champion.run_id == run1
    assert champion.tags["gates"] == "PASS" and champion.tags["promoted"] == "true"
    assert champion.tags["checkpoint"] == "checkpoints/pno-dropout-0123abcd.pt"

    # twice as bad as the champion: registered as v2, the champion stays v1
    _, cmp2, p2 = _run_through_registry(uri, 0.20)
    # compared with the champion's own served metric (0.10), not the run's fno metric (0.01)
    assert cmp2["champion_rel_l2"] == 0.10 and cmp2["ratio"] == pytest.approx(2.0)
    assert not cmp2["passed"]
    assert p2["version"] == "2" and not p2["promoted"] and p2["champion"] == "1"
    assert "relative L2 vs the champion of pno-darcy" in p2["reason"]
    v2 = client.get_model_version(NAME, "2")
    assert v2.tags["gates"] == "FAIL" and v2.tags["promoted"] == "false"
    assert v2.tags["reason"] == p2["reason"]
    assert client.get_model_version_by_alias(NAME, CHAMPION).version == 1

    # better than the champion but another gate failed: still not promoted
    _, cmp3, p3 = _run_through_registry(uri, 0.05, ("pno-dropout: calibrated coverage",))
    assert cmp3["passed"] and not p3["promoted"]
    assert p3["reason"] == "failed gates: Quality gates: pno-dropout: calibrated coverage"
    assert client.get_model_version_by_alias(NAME, CHAMPION).version == 1

    # better and every gate passes: the alias moves
    run4, _, p4 = _run_through_registry(uri, 0.105)
    assert p4["promoted"] and p4["version"] == "4" and p4["previous_champion"] == "1"
    assert client.get_model_version_by_alias(NAME, CHAMPION).run_id == run4
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 4


def test_retried_registration_reuses_the_version(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id, logged = _pipeline_run(uri, {"fno.rel_l2": 0.2})
    comparison = compare_with_champion.fn(uri, NAME, "fno", [{"label": "fno",
                                                               "scores": {"rel_l2": 0.2}}], 1.1)
    first = register_model_version.fn(uri, run_id, logged, comparison, _report(comparison), "c.pt")
    again = register_model_version.fn(uri, run_id, logged, comparison, _report(comparison), "c.pt")
    assert first == again and first["promoted"]
    assert len(MlflowClient(uri).search_model_versions(f"name = '{NAME}'")) == 1


def test_report_lines_say_what_the_registry_did(tmp_path: Path):
    kept = promotion_check({"model_name": NAME, "version": "5", "promoted": False,
                            "reason": "failed gates: Quality gates: x", "champion": "2",
                            "previous_champion": "2"})
    assert kept.status == "INFO"
    assert kept.value == "v5 not promoted, champion stays v2: failed gates: Quality gates: x"
    moved = promotion_check({"model_name": NAME, "version": "1", "promoted": True,
                             "reason": "all gates passed", "champion": "1",
                             "previous_champion": None})
    assert moved.value == "v1 promoted to champion (champion before: none)"
    # the written report gets the line and the outcome; the status stays what the gates said
    full = {"generated": "t", "run_name": "r", "mlflow_run_id": "id", "overall_status": "FAIL",
            "gates_passed": 1, "gates_total": 2, "failed_gates": ["Quality gates: x"],
            "not_implemented": [], "checks": [], "evaluation": [],
            "comparison": [], "figures": [], "pde": "burgers", "level": 0.9, "step_time": None,
            "setting": ""}
    paths = {"json": str(tmp_path / "report.json"), "markdown": str(tmp_path / "report.md")}
    Path(paths["json"]).write_text(json.dumps(full))
    promotion = {"model_name": NAME, "version": "5", "promoted": False, "champion": "2",
                 "reason": "failed gates: Quality gates: x", "previous_champion": "2"}
    out = record_promotion.fn(paths, promotion)
    written = json.loads(Path(paths["json"]).read_text())
    assert out["promotion"] == written["promotion"] == promotion
    assert written["overall_status"] == "FAIL"
    assert written["checks"][-1]["name"] == "promotion in the model registry (pno-darcy)"
    md = Path(paths["markdown"]).read_text()
    assert "- Model registry: v5 not promoted, champion stays v2" in md


def test_pno_run_prints_what_the_registry_did(capsys: pytest.CaptureFixture[str]):
    from pno.cli import _summary

    promotion = {"model_name": NAME, "version": "3", "promoted": False, "champion": "2",
                 "reason": "failed gates: Quality gates: x", "previous_champion": "2"}
    report = {"overall_status": "FAIL", "gates_passed": 1, "gates_total": 2,
              "failed_gates": ["Quality gates: x"], "markdown": "r.md", "json": "r.json",
              "promotion": promotion}
    _summary({"report": report, "tracking": {"run_id": "abc", "experiment_id": "1"}},
             "sqlite:///m.db", 1.0)
    out = capsys.readouterr().out
    assert "Registry:   pno-darcy v3 not promoted, champion stays v2: failed gates" in out
    assert "failed: Quality gates: x" in out
