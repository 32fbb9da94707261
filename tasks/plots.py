"""Evaluation pictures (matplotlib, Agg backend: no display needed), one function per figure.

Fields come as numpy arrays: (H, W) for 2D PDEs, (W,) for 1D ones.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _save(fig: plt.Figure, title: str, path: Path) -> Path:
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _maps(panels: list[tuple[str, np.ndarray]], title: str, path: Path) -> Path:
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    for ax, (name, field) in zip(axes[0], panels, strict=True):
        binary = field.dtype == bool
        im = ax.imshow(field.T.astype(float), origin="lower", extent=(0, 1, 0, 1),
                       cmap="Reds" if binary else "viridis", vmin=0 if binary else None,
                       vmax=1 if binary else None)
        ax.set_title(name)
        if not binary:
            fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, title, path)


def plot_sample(f: dict[str, np.ndarray | None], title: str, path: Path) -> Path:
    """Truth / mean / std / |error| / the points outside the calibrated interval for one test
    sample (``f``: input, truth, mean, std (None: deterministic), lower, upper)."""
    miss = (f["truth"] < f["lower"]) | (f["truth"] > f["upper"])
    err = np.abs(f["mean"] - f["truth"])
    if f["input"].ndim == 1:
        x = np.arange(f["input"].shape[0]) / f["input"].shape[0]
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.4))
        ax0.plot(x, f["input"], color="gray")
        ax0.set_title("input")
        ax1.plot(x, f["truth"], "k", label="truth")
        ax1.plot(x, f["mean"], "C0", label="predicted mean")
        ax1.fill_between(x, f["lower"], f["upper"], color="C0", alpha=0.3,
                         label="calibrated interval")
        ax1.plot(x[miss], f["truth"][miss], "rx", ms=4, label="outside")
        ax1.legend(loc="best", fontsize=8)
        ax1.set_title(f"target, |error| max {err.max():.3g}, {miss.mean():.1%} outside")
        return _save(fig, title, path)
    panels = [("input", f["input"]), ("truth", f["truth"]), ("predicted mean", f["mean"])]
    if f["std"] is not None:
        panels.append(("predicted std", f["std"]))
    panels += [("|error|", err), (f"outside interval ({miss.mean():.1%})", miss)]
    return _maps(panels, title, path)


def plot_decomposition(maps: dict[str, np.ndarray], title: str, path: Path) -> Path:
    """Aleatoric and epistemic std of one test sample and where each dominates."""
    alea, epi = maps["aleatoric"], maps["epistemic"]
    if alea.ndim == 1:
        x = np.arange(alea.shape[0]) / alea.shape[0]
        fig, ax = plt.subplots(figsize=(7, 3.4))
        ax.plot(x, alea, label="aleatoric std")
        ax.plot(x, epi, label="epistemic std")
        ax.legend(fontsize=8)
        return _save(fig, title, path)
    return _maps([("aleatoric std", alea), ("epistemic std", epi),
                  ("epistemic dominates", epi > alea)], title, path)


def plot_reliability(curves: dict[str, dict], level: float, path: Path) -> Path:
    """Nominal vs empirical coverage of central intervals per method: raw samples (solid) and
    after conformal calibration (dashed), with the diagonal."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="gray", lw=1)
    for i, (label, c) in enumerate(curves.items()):
        if c.get("before") is not None:
            ax.plot(c["levels"], c["before"], "o-", color=f"C{i}", label=f"{label}")
        ax.plot(c["levels"], c["after"], "s--", color=f"C{i}", label=f"{label}, calibrated")
    ax.axvline(level, color="gray", ls=":", lw=1)
    ax.set(xlabel="nominal coverage", ylabel="empirical coverage (test)", xlim=(0.4, 1.0),
           ylim=(0.0, 1.02))
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, "reliability diagram", path)


def plot_pit(hists: dict[str, list[int]], path: Path) -> Path:
    """PIT histograms (flat: calibrated; U: too narrow; hump: too wide)."""
    n = len(hists)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3), squeeze=False)
    for ax, (label, counts) in zip(axes[0], hists.items(), strict=True):
        counts = np.asarray(counts, dtype=float)
        density = counts / counts.sum() * len(counts)
        ax.bar(np.arange(len(counts)) / len(counts), density, width=1 / len(counts),
               align="edge", color="C0")
        ax.axhline(1.0, color="k", lw=1)
        ax.set(title=label, xlabel="PIT", xlim=(0, 1))
    return _save(fig, "PIT histograms (test)", path)


def plot_rollout(rollouts: dict[str, dict], level: float, path: Path) -> Path:
    """Relative L2, CRPS, coverage and relative spread along the rollout, per method."""
    keys = [("rel_l2", "relative L2 of the mean"), ("crps", "CRPS"),
            (f"coverage_{round(100 * level)}", f"coverage of {level:.0%} intervals"),
            ("relative_spread", "relative spread")]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2))
    for ax, (key, name) in zip(axes, keys, strict=True):
        for i, (label, r) in enumerate(rollouts.items()):
            steps = [s["step"] for s in r["steps"] if s.get(key) is not None]
            vals = [s[key] for s in r["steps"] if s.get(key) is not None]
            if vals:
                ax.plot(steps, vals, "o-", color=f"C{i}", label=label)
        if key.startswith("coverage"):
            ax.axhline(level, color="gray", ls=":")
        if key == "relative_spread" and rollouts:
            ax.axhline(next(iter(rollouts.values()))["spread_threshold"], color="gray", ls=":")
        ax.set(title=name, xlabel="rollout step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=7)
    return _save(fig, "autoregressive rollout (test trajectories)", path)
