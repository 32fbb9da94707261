"""Report stage: every line is a check that ran, with its measured value and threshold.

A check is a gate (it decides the overall status) or information (a measurement shown without a
verdict). A section that is not built yet says ``NOT_IMPLEMENTED``; nothing is PASS unless a
measured value met its threshold in this run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task

from pno.config import GateConfig, PipelineConfig
from tasks.tables import (
    anchors_markdown,
    calibration_markdown,
    comparison_markdown,
    comparison_rows,
    decomposition_markdown,
    rollout_markdown,
    write_comparison_csv,
)

SECTIONS = ("Error handling", "Monitoring", "Security", "Quality gates", "Infrastructure",
            "End-to-end", "Resilience", "Uncertainty scores")


@dataclass(frozen=True)
class Check:
    section: str
    name: str
    value: Any
    threshold: str
    status: str  # PASS, FAIL, INFO or NOT_IMPLEMENTED
    gate: bool


def gate(section: str, name: str, value: Any, ok: bool, threshold: str) -> Check:
    return Check(section, name, value, threshold, "PASS" if ok else "FAIL", True)


def info(section: str, name: str, value: Any) -> Check:
    return Check(section, name, value, "-", "INFO", False)


def todo(section: str, name: str, where: str) -> Check:
    return Check(section, name, None, where, "NOT_IMPLEMENTED", False)


def champion_check(c: dict) -> Check:
    """The gate against the registry's champion (``c``: from ``compare_with_champion``)."""
    return gate("Quality gates", f"{c['served']}: relative L2 vs the champion of "
                f"{c['model_name']}", c["value"], c["passed"], c["threshold"])


def promotion_check(p: dict) -> Check:
    """What the registry did with this run's version (``p``: ``register_model_version``)."""
    if p["promoted"]:
        before = f"v{p['previous_champion']}" if p["previous_champion"] else "none"
        value = f"v{p['version']} promoted to champion (champion before: {before})"
    else:
        kept = f"v{p['champion']}" if p["champion"] else "no champion"
        value = f"v{p['version']} not promoted, champion stays {kept}: {p['reason']}"
    return info("Quality gates", f"promotion in the model registry ({p['model_name']})", value)


def _resilience_checks(res: dict, g: GateConfig) -> list[Check]:
    retry, guard, load = res["retry"], res["invalid_input"], res["load"]
    eh, rs, sec = "Error handling", "Resilience", "Security"
    return [
        gate(eh, "transient fault survived through Prefect retries", retry["detail"],
             retry["completed"] and retry["attempts"] == retry["faults"] + 1,
             f"completes after {retry['faults']} injected faults, on attempt {retry['faults'] + 1}"
             f" of {retry['retries'] + 1}"),
        gate(eh, "invalid input fails at once (not retried)",
             f"{guard['state']}, attempts={guard['attempts']}",
             guard["state"] == "FAILED" and guard["attempts"] == 1, "failed, attempts == 1"),
        gate(eh, "malformed requests rejected with InvalidInputError",
             f"{load['bad_rejected']}/{load['bad_total']}",
             load["bad_rejected"] == load["bad_total"], "all rejected, none crash"),
        gate(sec, "ordinary test inputs accepted by input validation",
             f"{load['valid_checked'] - load['valid_rejected']}/{load['valid_checked']}",
             load["valid_rejected"] == 0, "no false rejections"),
        gate(sec, "checkpoint loader refuses pickled code (weights_only=True)",
             load["refuses_pickled_code"], load["refuses_pickled_code"], "refused"),
        todo(sec, "authentication, rate limiting",
             "none: no inference service; the servers of pno up listen on loopback only"),
        gate(rs, "concurrent inference error rate",
             f"{load['errors']}/{load['requests']} ({load['threads']} threads)",
             load["error_rate"] <= g.max_load_error_rate, f"<= {g.max_load_error_rate}"),
        gate(rs, "p95 latency (ms) per request", round(load["p95_ms"], 2),
             load["p95_ms"] <= g.max_p95_latency_ms, f"<= {g.max_p95_latency_ms}"),
        info(rs, "throughput (requests/s)", round(load["throughput_rps"], 2)),
        info(rs, "p50 / p99 latency (ms)", f"{load['p50_ms']:.2f} / {load['p99_ms']:.2f}"),
    ]


def _quality_checks(r: dict, cfg: PipelineConfig) -> list[Check]:
    g, level = cfg.gates, cfg.eval.level
    qg, mon = "Quality gates", "Monitoring"
    checks = [gate(qg, f"expectations met on {v['split']}", f"{v['successful']}/{v['evaluated']}",
                   v["successful"] == v["evaluated"], "all") for v in r["validation"]]
    pct = round(100 * level)
    for m in r["evaluation"]:
        rel = m["scores"]["rel_l2"]
        checks.append(gate(qg, f"{m['label']}: relative L2 of the mean on test", round(rel, 5),
                           rel <= g.max_rel_l2, f"<= {g.max_rel_l2}"))
        if not m["probabilistic"]:
            continue
        cov = m["scores"][f"coverage_{pct}"]
        checks.append(gate(qg, f"{m['label']}: empirical coverage of {pct}% intervals",
                           round(cov, 4), g.min_coverage <= cov <= g.max_coverage,
                           f"in [{g.min_coverage}, {g.max_coverage}]"))
        after = m["calibration"]["test"]["after"]["point_coverage"]
        tol = g.calibration_tolerance
        checks.append(gate(qg, f"{m['label']}: calibrated (conformal) coverage of {pct}% "
                           "intervals on test", round(after, 4), abs(after - level) <= tol,
                           f"in [{level - tol:.3g}, {level + tol:.3g}]"))
    leak = r["leakage"]
    checks.append(gate(qg, "no input shared between samples or splits (leakage)",
                       f"{leak['rows']} samples, {leak['duplicates']} shared", leak["success"],
                       "0 shared"))
    d = r["drift"]
    checks += [
        gate(qg, "feature drift share (current vs train, Evidently)",
             round(d["drifted_share"], 3), d["drifted_share"] <= g.max_drift_share,
             f"<= {g.max_drift_share}"),
        champion_check(r["champion"]),
    ]
    checks += [info(mon, f"drift of {c}", f"{v['method']} = {v['score']:.3g} "
                                          f"(threshold {v['threshold']}), drifted={v['drifted']}")
               for c, v in d["columns"].items()]
    for m in r["evaluation"]:
        cur = m["calibration"].get("current")
        if cur is not None:
            checks.append(info(mon, f"{m['label']}: calibrated coverage on the current batch",
                               f"{cur['after']['point_coverage']:.4f} (test "
                               f"{m['calibration']['test']['after']['point_coverage']:.4f})"))
    for t in r["training"]:
        losses = [h["train_loss"] for h in t["history"]]
        checks.append(gate(mon, f"{t['label']}: training losses finite",
                           f"{len(losses)} epochs, last {losses[-1]:.4g}" if losses else "none",
                           all(math.isfinite(v) for v in losses), "all finite"))
    return checks


def stage_evidence(r: dict) -> dict[str, bool]:
    """Per stage, whether its outputs exist and are complete (files on disk, counts matching)."""
    test = next(d for d in r["data"] if d["split"] == "test")
    load = r["resilience"]["load"]
    return {
        "data": all(Path(d["path"]).is_file() and d["n_samples"] > 0 for d in r["data"]),
        "expectations": all(v["success"] and Path(v["result"]).is_file()
                            for v in r["validation"]) and r["leakage"]["success"],
        "train": all(Path(t["checkpoint"]).is_file() for t in r["training"]),
        "evaluate": all(m["scores"]["n"] == test["n_samples"] for m in r["evaluation"]),
        "drift": Path(r["drift"]["html"]).is_file() and bool(r["drift"]["columns"]),
        "resilience": load["requests"] > 0 and load["bad_total"] > 0,
    }


def _infra_checks(r: dict, g: GateConfig) -> list[Check]:
    inf, e2e = "Infrastructure", "End-to-end"
    checks = [info(inf, f"data {d['split']}: content hash", f"{d['content_hash'][:16]} "
                   f"({'cache hit' if d['cache_hit'] else 'generated'}, {d['seconds']:.1f} s)")
              for d in r["data"]]
    checks += [
        gate(inf, "peak resident memory (MB)", round(r["peak_rss_mb"], 1),
             r["peak_rss_mb"] <= g.max_peak_rss_mb, f"<= {g.max_peak_rss_mb}"),
        info(inf, "pipeline wall time until report (s)", round(r["elapsed_seconds"], 1)),
    ]
    checks += [info(inf, f"{t['label']}: training", (
        f"{t['epochs_run']} epochs at {t['samples_per_second']:.1f} samples/s"
        if t["epochs_run"] else "reused a finished checkpoint")
        + (f", resumed from epoch {t['resumed_from_epoch']}" if t["resumed_from_epoch"] else ""))
        for t in r["training"]]
    expected = r["expected_artifacts"]
    present = [a for a in expected if any(p.startswith(a) for p in r["artifacts"])]
    done = stage_evidence(r)
    checks += [
        gate(e2e, "stages that left their outputs", ", ".join(k for k, v in done.items() if v),
             all(done.values()), ", ".join(done)),
        gate(e2e, "MLflow run holds the stage artifacts", f"{len(present)}/{len(expected)}",
             len(present) == len(expected), ", ".join(expected)),
        gate(e2e, "model logged to MLflow reloads with the same predictions (max abs diff)",
             r["logged_model"]["reload_max_abs_diff"],
             r["logged_model"]["reload_max_abs_diff"] == 0.0, "== 0"),
    ]
    return checks


def _score_checks(r: dict) -> list[Check]:
    checks = []
    for m in r["evaluation"]:
        for k, v in m["scores"].items():
            checks.append(info("Uncertainty scores", f"{m['label']}: {k}",
                               v if isinstance(v, int) else round(v, 6)))
        if not m["probabilistic"]:
            checks.append(info("Uncertainty scores", f"{m['label']}: NLL, coverage",
                               "not defined: deterministic model, no predictive distribution"))
    return checks


def build_report(results: dict, cfg: PipelineConfig) -> dict:
    """The report as a JSON-ready dict: checks, overall status, scores."""
    g = cfg.gates
    checks = (_resilience_checks(results["resilience"], g) + _quality_checks(results, cfg)
              + _infra_checks(results, g) + _score_checks(results))
    gates = [c for c in checks if c.gate]
    failed = [c for c in gates if c.status == "FAIL"]
    return {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_name": results["run_name"], "mlflow_run_id": results["run_id"],
        "overall_status": "FAIL" if failed else "PASS",
        "gates_passed": len(gates) - len(failed), "gates_total": len(gates),
        "failed_gates": [f"{c.section}: {c.name}" for c in failed],
        "not_implemented": [f"{c.section}: {c.name}" for c in checks
                            if c.status == "NOT_IMPLEMENTED"],
        "checks": [asdict(c) for c in checks],
        "scores": {m["label"]: m["scores"] for m in results["evaluation"]},
        "comparison": comparison_rows(results["evaluation"], results["training"]),
        "evaluation": [{k: m[k] for k in ("label", "method", "probabilistic", "calibration",
                                          "decomposition", "rollout", "curves",
                                          "current_scores", "plots") if k in m}
                       for m in results["evaluation"]],
        "figures": [*results["comparison_plots"],
                    *[p for m in results["evaluation"] for p in m["plots"]]],
        "pde": cfg.data.pde, "level": cfg.eval.level, "setting": _setting(cfg),
        "step_time": _step_time(cfg),
    }


def _setting(cfg: PipelineConfig) -> str:
    d, t = cfg.data, cfg.train
    grid = "x".join(str(n) for n in d.spatial_shape)
    return (f"{d.pde} at {grid} (trained and tested at that grid), {d.n_train} training "
            f"samples, at most {t.epochs} epochs ({t.pno_epochs} for energy-score methods), "
            f"width {cfg.model.width}, {cfg.model.modes} modes, CPU")


def _step_time(cfg: PipelineConfig) -> float | None:
    """Time covered by one model step (t_final) for a time-dependent PDE."""
    from pdes.registry import get_spec, resolve_params

    if not get_spec(cfg.data.pde).time_dependent:
        return None
    return resolve_params(cfg.data.pde, cfg.data.params)["t_final"]


def render_markdown(report: dict) -> str:
    lines = [f"# Robustness report: {report['run_name']}", "",
             f"- Generated: {report['generated']}",
             f"- MLflow run: `{report['mlflow_run_id']}`",
             f"- **Overall status: {report['overall_status']}** "
             f"({report['gates_passed']}/{report['gates_total']} gates passed, "
             f"{len(report['not_implemented'])} checks not implemented)", ""]
    if report.get("promotion"):
        lines.insert(-1, f"- Model registry: {promotion_check(report['promotion']).value}")
    if report["failed_gates"]:
        lines += ["Failed gates:", *[f"- {f}" for f in report["failed_gates"]], ""]
    ev, level = report["evaluation"], report["level"]
    lines += comparison_markdown(report["comparison"])
    lines += calibration_markdown(ev, level) + decomposition_markdown(ev)
    lines += rollout_markdown(ev, level, report["step_time"])
    if report["pde"] == "darcy":
        lines += anchors_markdown(report["comparison"], report["setting"])
    lines += ["## Figures", "", *[f"- [{Path(p).name}](plots/{Path(p).name})"
                                  for p in report["figures"]], ""]
    for section in SECTIONS:
        rows = [c for c in report["checks"] if c["section"] == section]
        lines += [f"## {section}", "", "| check | measured | threshold | status |",
                  "|---|---|---|---|"]
        lines += [f"| {c['name']} | {'-' if c['value'] is None else c['value']} | "
                  f"{c['threshold']} | {c['status']} |" for c in rows]
        lines.append("")
    return "\n".join(lines)


@task(name="write-report")
def write_report(results: dict, cfg: PipelineConfig, run_dir: Path, tracking_uri: str) -> dict:
    """Write report.json and report.md under ``run_dir``; returns paths and the status. The
    end-to-end checks read the run's artifacts back from MLflow here."""
    from tasks.tracking import list_artifacts

    report = build_report({**results, "artifacts": list_artifacts(tracking_uri, results["run_id"])},
                          cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = run_dir / "report.json", run_dir / "report.md"
    json_path.write_text(json.dumps(report, indent=1, default=str))
    md_path.write_text(render_markdown(report))
    csv_path = write_comparison_csv(report["comparison"], run_dir / "comparison.csv")
    return {"json": str(json_path), "markdown": str(md_path), "csv": str(csv_path),
            "overall_status": report["overall_status"], "gates_passed": report["gates_passed"],
            "gates_total": report["gates_total"], "failed_gates": report["failed_gates"]}


@task(name="record-promotion")
def record_promotion(report: dict, promotion: dict) -> dict:
    """Add the registry's outcome to the written report (``report``: :func:`write_report`'s
    paths and status): an INFO line and a ``promotion`` entry in report.json, re-rendered
    report.md. The overall status does not change: promotion follows from it."""
    json_path = Path(report["json"])
    full = json.loads(json_path.read_text())
    full["checks"].append(asdict(promotion_check(promotion)))
    full["promotion"] = promotion
    json_path.write_text(json.dumps(full, indent=1, default=str))
    Path(report["markdown"]).write_text(render_markdown(full))
    return {**report, "promotion": promotion}
