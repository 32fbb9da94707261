"""Gated promotion in the MLflow model registry.

Every pipeline run registers its served model as a new version of one registered model (default
``pno-<pde>``). The alias ``champion`` moves to that version only when every gate of the run's
report passed, the comparison with the current champion included; otherwise the champion stays
where it was and the version's tags say why (``gates``, ``promoted``, ``reason``).

The decisions (:func:`champion_gate`, :func:`decide_promotion`) are plain functions; the tasks
around them only read and write the registry (retried: that is I/O).
"""

from __future__ import annotations

import math
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prefect import task

from tasks import task_logger

CHAMPION = "champion"
#: MLflow caps tag values (5000 characters for model versions); long reasons are cut
MAX_TAG = 4000


def champion_gate(new_rel_l2: float, champion: dict | None, max_ratio: float) -> dict:
    """Whether ``new_rel_l2`` (relative L2 of the mean on test) is at most ``max_ratio`` times the
    champion's. ``champion``: :func:`find_champion`'s record, or None when there is none yet (the
    gate passes). A champion without a comparable metric fails the gate: nothing to compare is
    not evidence of being as good."""
    threshold = f"<= {max_ratio:g} x the champion's relative L2"
    out = {"new_rel_l2": new_rel_l2, "max_ratio": max_ratio, "threshold": threshold,
           "champion_version": None, "champion_rel_l2": None, "ratio": None}
    if champion is None:
        return {**out, "passed": True, "value": f"{new_rel_l2:.5g}; no champion yet"}
    old = champion["rel_l2"]
    out.update(champion_version=champion["version"], champion_rel_l2=old)
    if old is None or not math.isfinite(old):
        return {**out, "passed": False, "value": f"champion v{champion['version']} has no "
                f"metric {champion['metric']} to compare with"}
    ratio = new_rel_l2 / old if old > 0 else (1.0 if new_rel_l2 == 0 else math.inf)
    passed = math.isfinite(new_rel_l2) and new_rel_l2 <= max_ratio * old
    return {**out, "passed": passed, "ratio": ratio,
            "value": f"{new_rel_l2:.5g} vs {old:.5g} (champion v{champion['version']}), "
                     f"ratio {ratio:.3f}"}


def decide_promotion(overall_status: str, failed_gates: list[str], compared_with: str | None,
                     current_champion: str | None) -> dict:
    """Promote when the report passed and the champion it was compared with is still the
    champion (another run may have moved the alias meanwhile). Returns promote and reason."""
    if overall_status not in ("PASS", "FAIL") or (overall_status == "PASS") == bool(failed_gates):
        raise ValueError(f"inconsistent report: status {overall_status!r} with failed gates "
                         f"{failed_gates}")
    if failed_gates:
        return {"promote": False, "reason": "failed gates: " + "; ".join(failed_gates)}
    if compared_with != current_champion:
        return {"promote": False, "reason": f"the champion moved from "
                f"{_version(compared_with)} to {_version(current_champion)} during this run; "
                "its gate compared against the old one"}
    return {"promote": True, "reason": "all gates passed"}


def _version(v: str | None) -> str:
    return "none" if v is None else f"v{v}"


def find_champion(client: MlflowClient, model_name: str) -> dict | None:
    """The version behind the ``champion`` alias: version, its run, tags and the run's metric
    ``<served label>.rel_l2`` (None when missing); None when there is no champion."""
    try:
        version = client.get_registered_model(model_name).aliases.get(CHAMPION)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if version is None:
        return None
    mv = client.get_model_version(model_name, str(version))
    served = mv.tags.get("served")
    metric = f"{served}.rel_l2" if served else "<served>.rel_l2 (version has no 'served' tag)"
    value = client.get_run(mv.run_id).data.metrics.get(metric) if served and mv.run_id else None
    return {"version": str(mv.version), "run_id": mv.run_id, "tags": dict(mv.tags),
            "metric": metric, "rel_l2": value}


@task(name="compare-with-champion", retries=2, retry_delay_seconds=[1, 4])
def compare_with_champion(tracking_uri: str, model_name: str, served: str,
                          evaluation: list[dict], max_ratio: float) -> dict:
    """The champion gate for the served method ``served`` (a label of ``evaluation``)."""
    rel_l2 = next(m["scores"]["rel_l2"] for m in evaluation if m["label"] == served)
    champion = find_champion(MlflowClient(tracking_uri), model_name)
    gate = champion_gate(rel_l2, champion, max_ratio)
    task_logger().info("champion gate for %s: %s -> %s", model_name, gate["value"],
                       "PASS" if gate["passed"] else "FAIL")
    return {**gate, "model_name": model_name, "served": served}


def _version_for_run(client: MlflowClient, model_name: str, run_id: str,
                     logged_model: dict) -> str:
    """This run's version of ``model_name``, created once: a retried task must not register the
    same model twice."""
    try:
        client.create_registered_model(model_name, description="PNO Physics Bench: served "
                                       "model of each robustness run; alias 'champion' is gated")
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    for mv in client.search_model_versions(f"run_id = '{run_id}'"):
        # match on the source: the SQLite store does not return model_id with a version
        if mv.name == model_name and mv.source == logged_model["model_uri"]:
            return str(mv.version)
    mv = client.create_model_version(model_name, source=logged_model["model_uri"],
                                     run_id=run_id, model_id=logged_model["model_id"])
    return str(mv.version)


@task(name="register-model-version", retries=2, retry_delay_seconds=[1, 4])
def register_model_version(tracking_uri: str, run_id: str, logged_model: dict, comparison: dict,
                           report: dict, checkpoint: str) -> dict:
    """Register the run's logged model (``logged_model``: model_id from ``log_model``) under
    ``comparison["model_name"]``, tag the version with the gates' outcome, and move the
    ``champion`` alias to it only when :func:`decide_promotion` says so. ``checkpoint``: local
    path of the served checkpoint, logged under ``checkpoints/`` (tagged for the monitor)."""
    client = MlflowClient(tracking_uri)
    name = comparison["model_name"]
    version = _version_for_run(client, name, run_id, logged_model)
    alias = client.get_registered_model(name).aliases.get(CHAMPION)
    alias = None if alias is None else str(alias)
    # on a retry the alias may already point here: then the champion before was the one compared
    current = comparison["champion_version"] if alias == version else alias
    decision = decide_promotion(report["overall_status"], report["failed_gates"],
                                comparison["champion_version"], current)
    tags = {"gates": report["overall_status"], "promoted": str(decision["promote"]).lower(),
            "reason": decision["reason"][:MAX_TAG], "served": comparison["served"],
            "rel_l2": f"{comparison['new_rel_l2']:.6g}",
            "checkpoint": f"checkpoints/{Path(checkpoint).name}"}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if decision["promote"]:
        client.set_registered_model_alias(name, CHAMPION, version)
    task_logger().info("%s v%s: %s (%s)", name, version,
                       "promoted to champion" if decision["promote"] else "not promoted",
                       decision["reason"])
    return {"model_name": name, "version": version, "promoted": decision["promote"],
            "reason": decision["reason"], "previous_champion": current,
            "champion": version if decision["promote"] else current}
