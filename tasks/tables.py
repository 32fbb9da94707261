"""The report's tables: method comparison (mean and spread over seeds; Markdown and CSV),
calibration before/after, variance decomposition, rollouts, and the published anchors.

Inputs are the evaluation stage's records (``tasks.evaluate.evaluate_model``) and the training
stage's; nothing here measures anything, it only arranges what was measured.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

#: columns of the comparison; None where a method has no such score (deterministic methods)
COMPARED = ("rel_l2", "crps", "energy_score", "nll", "ece", "sharpness", "coverage_90",
            "width_90", "calibrated_coverage", "calibrated_width")
#: aggregated as well, not shown in the comparison (the anchors quote 95% coverage)
EXTRA = ("coverage_95",)

#: Bulte, Scholl and Kutyniok 2025, Darcy flow (PDEBench, trained at 64x64, tested at 128x128,
#: 95% intervals); None where the paper's table gives no value we quote
ANCHORS = {
    "pno-dropout": {"crps": 0.046, "coverage": 0.98},
    "mc-dropout": {"crps": 0.067, "coverage": 0.52},
    "laplace": {"crps": 0.062, "coverage": 0.976},
    "fno": {"crps": 0.078, "coverage": None},
}


def flat_metrics(e: dict) -> dict[str, float | None]:
    """One evaluation record's comparison values."""
    after = e["calibration"]["test"]["after"]
    scores = e["scores"]
    out = {k: scores.get(k) for k in (*COMPARED, *EXTRA)}
    out["calibrated_coverage"] = after["point_coverage"]
    out["calibrated_width"] = after["point_width"]
    return out


def comparison_rows(evaluation: list[dict], training: list[dict]) -> list[dict]:
    """One row per method: mean and sample std over its seeds of every compared score, and the
    mean training time and epochs."""
    cost = {t["label"]: t for t in training}
    methods = list(dict.fromkeys(e["method"] for e in evaluation))
    rows = []
    for method in methods:
        reps = [e for e in evaluation if e["method"] == method]
        row: dict = {"method": method, "probabilistic": reps[0]["probabilistic"],
                     "n_seeds": len(reps)}
        for key in (*COMPARED, *EXTRA):
            vals = [v for v in (flat_metrics(e)[key] for e in reps) if v is not None]
            row[key] = statistics.fmean(vals) if vals else None
            row[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else None
        hist = [cost[e["label"]]["history"] for e in reps]
        row["epochs"] = statistics.fmean(len(h) for h in hist)
        row["train_seconds"] = round(statistics.fmean(
            sum(r.get("seconds", 0.0) for r in h) for h in hist), 1)
        row["stopped_early"] = any(cost[e["label"]]["stopped_early"] for e in reps)
        rows.append(row)
    return rows


def _pm(row: dict, key: str) -> str:
    if row[key] is None:
        return "-"
    std = row.get(f"{key}_std")
    return f"{row[key]:.4g}" + (f" ± {std:.2g}" if std is not None else "")


def comparison_markdown(rows: list[dict]) -> list[str]:
    n_seeds = max((r["n_seeds"] for r in rows), default=1)
    head = ["method", *COMPARED, "epochs", "train s"]
    lines = ["## Method comparison (test split)", "",
             f"Mean{' ± sample std over ' + str(n_seeds) + ' seeds' if n_seeds > 1 else ''} "
             "of each score; `calibrated_*`: the split-conformal 90% band (sample std scaled, "
             "or for a deterministic method a constant band from its calibration residuals).",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        epochs = f"{row['epochs']:g}{' (early stop)' if row['stopped_early'] else ''}"
        lines.append(f"| {row['method']} | " + " | ".join(_pm(row, k) for k in COMPARED)
                     + f" | {epochs} | {row['train_seconds']} |")
    return [*lines, "", "`-`: not defined for a deterministic method.", ""]


def write_comparison_csv(rows: list[dict], path: Path) -> Path:
    fields = ["method", "probabilistic", "n_seeds",
              *[c for k in COMPARED for c in (k, f"{k}_std")],
              "epochs", "train_seconds", "stopped_early"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: r.get(k) for k in fields} for r in rows)
    return path


def calibration_markdown(evaluation: list[dict], level: float) -> list[str]:
    pct = f"{level:.0%}"
    lines = [f"## Calibration (split conformal, {pct} intervals)", "",
             "Fitted on the calibration split; coverage is the share of test points inside the "
             f"band. Before: the sample-quantile interval and the band mean ± z·std (z = "
             f"Gaussian {pct} quantile). Per function: share of test functions with at least "
             "the point rate of their points covered.", "",
             "| model | scale | q point | before: samples / band | after: points | width | "
             "q function | before / after: functions | current after: points |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in evaluation:
        c = e["calibration"]
        cal, t = c["calibrator"], c["test"]
        sample_cov = t["before"].get("sample_interval_coverage")
        before = (f"{sample_cov:.3f} / " if sample_cov is not None else "- / ") \
            + f"{t['before']['point_coverage']:.3f}"
        current = c.get("current", {}).get("after", {}).get("point_coverage")
        q_f = cal["function_scale"]
        q_f = f"{q_f:.4g}" if q_f != float("inf") else "inf (calibration split too small)"
        lines.append(
            f"| {e['label']} | {c['scale']} | {cal['point_scale']:.4g} | {before} | "
            f"{t['after']['point_coverage']:.4f} | {t['after']['point_width']:.4g} | "
            f"{q_f} | {t['before']['function_coverage']:.3f} / "
            f"{t['after']['function_coverage']:.3f} | "
            f"{'-' if current is None else f'{current:.4f}'} |")
    return [*lines, ""]


def decomposition_markdown(evaluation: list[dict]) -> list[str]:
    lines = ["## Variance decomposition (law of total variance, test split)", "",
             "| model | posterior over | aleatoric var | epistemic var | epistemic share | "
             "points where epistemic dominates |", "|---|---|---|---|---|---|"]
    for e in evaluation:
        d = e["decomposition"]
        if not e["probabilistic"]:
            continue
        if not d["available"]:
            lines.append(f"| {e['label']} | {d['why']} | - | - | - | - |")
            continue
        lines.append(f"| {e['label']} | {d['over']}, {d['draws']} draws | "
                     f"{d['aleatoric_var']:.3g} | {d['epistemic_var']:.3g} | "
                     f"{d['epistemic_share']:.3f} | {d['epistemic_dominant_points']:.3f} |")
    return [*lines, ""]


def rollout_markdown(evaluation: list[dict], level: float, step_time: float | None) -> list[str]:
    rolled = [e for e in evaluation if e["rollout"]]
    if not rolled:
        return []
    pct = round(100 * level)
    lines = ["## Autoregressive rollout (sample paths, test trajectories)", "",
             f"Per step: relative L2 of the path mean / CRPS / coverage of {pct}% intervals / "
             "relative spread (RMS std over RMS mean).", "",
             "| model | paths | " + " | ".join(
                 f"step {s['step']}" for s in rolled[0]["rollout"]["steps"])
             + " | first step over spread threshold |",
             "|---|---|" + "---|" * (len(rolled[0]["rollout"]["steps"]) + 1)]
    for e in rolled:
        r = e["rollout"]
        cells = []
        for s in r["steps"]:
            parts = [f"{s['rel_l2']:.3g}"]
            if s.get("relative_spread") is not None:
                parts += [f"{s['crps']:.3g}", f"{s[f'coverage_{pct}']:.2f}",
                          f"{s['relative_spread']:.3g}"]
            cells.append(" / ".join(parts))
        first = r["first_step_over_threshold"]
        when = "-" if not e["probabilistic"] else (
            f"never (threshold {r['spread_threshold']})" if first is None else
            f"step {first}" + (f" (t = {first * step_time:g})" if step_time else ""))
        lines.append(f"| {e['label']} | {r['n_paths']} | " + " | ".join(cells) + f" | {when} |")
    return [*lines, ""]


def anchors_markdown(rows: list[dict], setting: str) -> list[str]:
    """Our Darcy scores beside Bulte, Scholl and Kutyniok 2025 (different setting: quoted, not
    claimed equal)."""
    ours = {r["method"]: r for r in rows}
    lines = ["## Published anchors (Bulte, Scholl and Kutyniok 2025, Darcy)", "",
             "Theirs: PDEBench Darcy, trained at 64x64, tested at 128x128, 95% intervals. "
             f"Ours: {setting}. CRPS is in the units of each dataset's solution, so only the "
             "ranking carries over.", "",
             "| method | their CRPS | their coverage (95%) | our CRPS | our coverage (95%) |",
             "|---|---|---|---|---|"]
    for method, a in ANCHORS.items():
        r = ours.get(method)
        our_crps = "-" if r is None or r["crps"] is None else f"{r['crps']:.4g}"
        cov = None if r is None else r.get("coverage_95")
        lines.append(f"| {method} | {a['crps']} | {a['coverage'] or '-'} | {our_crps} | "
                     f"{'-' if cov is None else f'{cov:.3f}'} |")
    return [*lines, ""]
