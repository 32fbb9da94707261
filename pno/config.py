"""Validated configuration of the robustness pipeline: named presets and ``key=value`` overrides.

Defaults finish on a 2-core laptop; ``smoke`` runs the whole flow on tiny data (for trying an
install and for tests). Bigger runs are a preset or an override, never an edit of the code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pdes.registry import generating_config, get_spec, resolve_params

SPLITS = ("train", "val", "calib", "test", "current")
#: trajectories K t_final long (frames every t_final) for rollouts of time-dependent PDEs
ROLLOUT = "rollout"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PDEName = Literal["darcy", "burgers", "ks", "navier_stokes"]


class DataConfig(Strict):
    """Which PDE, how many samples per split, and its parameters (see ``pdes.registry``)."""

    pde: PDEName = "darcy"
    resolution: int | None = Field(None, ge=8, le=8192,
                                   description="grid points per side; None: the PDE's default")
    n_train: int = Field(800, ge=8)
    n_val: int = Field(100, ge=4)
    n_calib: int = Field(100, ge=4)
    n_test: int = Field(100, ge=4)
    n_current: int = Field(100, ge=4)
    n_rollout: int = Field(20, ge=0, description="trajectories for autoregressive rollouts "
                           "(time-dependent PDEs only; 0: no rollout)")
    rollout_steps: int = Field(5, ge=1, description="rollout length in steps of t_final")
    seed: int = Field(0, ge=0)
    params: dict[str, float] = Field(default_factory=dict,
                                     description="PDE parameters, e.g. {'nu': 0.01}")
    current_params: dict[str, float] = Field(
        default_factory=dict, description="parameters changed for the 'current' batch only "
        "(a shifted batch for drift studies); empty: same as training, i.e. no drift")

    @model_validator(mode="after")
    def _check_params(self) -> DataConfig:
        resolve_params(self.pde, self.params)
        resolve_params(self.pde, {**self.params, **self.current_params})
        if self.pde == "darcy":
            p = resolve_params(self.pde, self.params)
            if p["low"] >= p["high"]:
                raise ValueError(f"low ({p['low']}) must be below high ({p['high']})")
        return self

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits of a run: SPLITS, and ``rollout`` for a time-dependent PDE."""
        if self.n_rollout and get_spec(self.pde).time_dependent:
            return (*SPLITS, ROLLOUT)
        return SPLITS

    @property
    def grid_points(self) -> int:
        return self.resolution or get_spec(self.pde).default_resolution

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return (self.grid_points,) * get_spec(self.pde).dim

    def n_samples(self, split: str) -> int:
        return getattr(self, f"n_{split}")

    def generating_config(self, split: str) -> dict[str, Any]:
        """Everything that determines a split's content; its hash is the cache key."""
        if split not in self.splits:
            raise ValueError(f"split must be one of {self.splits}, got {split!r}")
        params = {**self.params, **(self.current_params if split == "current" else {})}
        if split == ROLLOUT:  # frames every t_final, K of them: the truth of a K-step rollout
            t_final = resolve_params(self.pde, params)["t_final"]
            params = {**params, "t_final": self.rollout_steps * t_final,
                      "n_frames": self.rollout_steps + 1}
        # one seed per split, derived from the base seed
        return generating_config(self.pde, split, self.n_samples(split), self.grid_points,
                                 self.seed * 1000 + self.splits.index(split), params)


MethodName = Literal["fno", "pno-dropout", "pno-reparam", "variational", "mc-dropout",
                     "ensemble", "deeponet"]
#: trained with the energy score over several samples per input: they get ``train.pno_epochs``
ENERGY_METHODS = ("pno-dropout", "pno-reparam")


class ModelConfig(Strict):
    """Backbone sizes (shared by every FNO-based method) and each method's own settings."""

    width: int = Field(32, ge=1)
    modes: int = Field(8, ge=1)
    n_layers: int = Field(4, ge=1)
    padding: int = Field(8, ge=0, description="zero padding for non-periodic data "
                         "(32 + 8 = 40 points: an FFT-friendly size)")
    projection_width: int = Field(64, ge=1)
    dropout: float = Field(
        0.01, gt=0.0, lt=1.0, description="dropout rate of pno-dropout and mc-dropout (Bulte et "
        "al.'s Darcy rate; measured against 0.1 in benchmarks/README.md)")
    ensemble_size: int = Field(5, ge=2, description="ensemble members")
    ensemble_member: Literal["fno", "pno-reparam"] = Field(
        "fno", description="deterministic FNO members (relative L2), or PNO-R members with "
        "Gaussian heads (energy score), which give the ensemble an aleatoric part")
    kl_weight: float = Field(
        1e-6, ge=0.0, description="variational: weight of KL/n_train (a tempered ELBO: the fit "
        "term is a relative L2, not a likelihood; the sweep is in benchmarks/README.md)")
    prior_std: float = Field(1.0, gt=0.0, description="variational: prior std of the weights")
    deeponet_basis: int = Field(64, ge=1, description="DeepONet basis functions per channel")
    deeponet_width: int = Field(128, ge=1)
    deeponet_layers: int = Field(3, ge=1)


class TrainConfig(Strict):
    methods: tuple[MethodName, ...] = Field(
        ("fno", "pno-dropout"), min_length=1,
        description="methods trained, scored and compared (pno run --method NAME)")
    serve: MethodName | None = Field(
        None, description="method behind the load test and the logged model; None: the first "
        "probabilistic one in methods (else the first)")
    epochs: int = Field(20, ge=1, description="most epochs of the methods trained with L2/ELBO")
    pno_epochs: int = Field(12, ge=1, description="most epochs of the energy-score methods "
                            "(each step costs ~train_samples passes)")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    grad_clip: float = Field(1.0, gt=0.0)
    plateau_patience: int = Field(2, ge=0, description="epochs without a better validation loss "
                                  "before the learning rate halves")
    early_stop_patience: int = Field(6, ge=0, description="epochs without a better validation "
                                     "loss before training stops; 0: never")
    train_samples: int = Field(3, ge=2, description="samples per input in the energy score")
    seed: int = 0
    n_seeds: int = Field(1, ge=1, le=20, description="training replicates per method (seeds "
                         "seed, seed+1, ...): the comparison shows mean and spread over them")

    @model_validator(mode="after")
    def _check_methods(self) -> TrainConfig:
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must not repeat, got {list(self.methods)}")
        if self.serve is not None and self.serve not in self.methods:
            raise ValueError(f"serve={self.serve!r} is not among methods {list(self.methods)}")
        return self

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.seed + i for i in range(self.n_seeds))

    def label(self, method: str, seed: int) -> str:
        """Name of one trained replicate in logs, MLflow keys and the report."""
        return method if self.n_seeds == 1 else f"{method}-seed{seed}"

    @property
    def served_method(self) -> str:
        if self.serve is not None:
            return self.serve
        from model.methods import method_class

        return next((m for m in self.methods if method_class(m).probabilistic), self.methods[0])


class EvalConfig(Strict):
    n_samples: int = Field(100, ge=2, description="predictive samples per test input")
    level: float = Field(0.9, gt=0.0, lt=1.0, description="central interval level")
    batch_size: int = Field(4, ge=1, description="test inputs per forward pass (x n_samples)")
    plot_index: int = Field(0, ge=0, description="test sample shown in the plot")
    point_rate: float = Field(0.9, gt=0.0, le=1.0, description="per-function conformal "
                              "guarantee: share of a function's points that must be covered")
    decomposition_draws: int = Field(32, ge=2, description="posterior draws (weights, masks) "
                                     "for the aleatoric/epistemic split")
    rollout_paths: int = Field(32, ge=2, description="sample paths per rollout trajectory")
    spread_threshold: float = Field(0.1, gt=0.0, description="relative spread whose first "
                                    "crossing along a rollout is reported")


DRIFT_COLUMNS = {
    # a_mean is left out: with two coefficient values it is an affine function of
    # a_high_fraction, and a duplicated feature would count twice in the drifted share
    "darcy": ("a_high_fraction", "u_mean", "u_max", "u_rms"),
    "burgers": ("in_rms", "in_max", "out_rms", "out_max"),
    "ks": ("in_rms", "in_max", "out_rms", "out_max"),
    "navier_stokes": ("in_rms", "in_max", "out_rms", "out_max"),
}


class DriftConfig(Strict):
    columns: tuple[str, ...] | None = Field(None, description="feature columns compared; "
                                            "None: the PDE's default set")
    drift_share: float = Field(0.5, gt=0.0, le=1.0)

    def columns_for(self, pde: str) -> tuple[str, ...]:
        return self.columns or DRIFT_COLUMNS[pde]


class ResilienceConfig(Strict):
    injected_faults: int = Field(2, ge=0, description="transient faults before success")
    retries: int = Field(3, ge=0)
    retry_delay_seconds: float = Field(0.2, ge=0.0, description="first backoff delay")
    load_threads: int = Field(4, ge=1)
    load_requests: int = Field(100, ge=1)
    load_batch: int = Field(2, ge=1)
    load_samples: int = Field(16, ge=2, description="predictive samples per load request")


class GateConfig(Strict):
    """Thresholds of the quality gates; the report's overall status is computed from them."""

    max_rel_l2: float = Field(0.1, gt=0.0, description="relative L2 of the mean, each model")
    min_coverage: float = Field(0.7, ge=0.0, le=1.0,
                                description="coverage, each probabilistic method")
    max_coverage: float = Field(1.0, ge=0.0, le=1.0)
    calibration_tolerance: float = Field(0.02, ge=0.0, le=1.0, description="calibrated "
                                         "coverage on test within level +- this, each "
                                         "probabilistic method")
    max_drift_share: float = Field(0.5, ge=0.0, le=1.0)
    max_load_error_rate: float = Field(0.0, ge=0.0, le=1.0)
    max_p95_latency_ms: float = Field(2000.0, gt=0.0)
    max_peak_rss_mb: float = Field(8000.0, gt=0.0)


class RegistryConfig(Strict):
    """Where each run's served model is registered, and the gate against the current champion."""

    model_name: str | None = Field(None, min_length=1, description="registered model in the "
                                   "MLflow model registry; None: pno-<pde>")
    max_rel_l2_vs_champion: float = Field(
        1.10, gt=0.0, description="the new model's relative L2 on test must be <= this times "
        "the champion's (1.10: at most 10% worse); the alias 'champion' moves only when every "
        "gate passes")

    def name_for(self, pde: str) -> str:
        return self.model_name or f"pno-{pde}"


def resolve_tracking_uri(uri: str | None) -> str:
    """``uri``, else $MLFLOW_TRACKING_URI, else ``sqlite:///<cwd>/mlflow.db``."""
    if uri:
        return uri
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


class RunnerConfig(Strict):
    """How the fan-out (training of each method x seed, then their evaluations) runs: Prefect's
    thread task runner, or prefect-dask's on a local cluster or at an address.

    ``pno run`` builds the runner from these settings; a deployment runs with the flow's
    default (threads, one at a time) and logs a warning when they ask for another."""

    kind: Literal["threads", "dask"] = Field("threads", description="task runner of the "
                                             "fan-out (pno run --task-runner)")
    max_workers: int = Field(1, ge=1, description="threads: tasks at once; 1 keeps runs "
                             "repeatable (torch's RNG and thread pool are process-wide)")
    dask_address: str | None = Field(None, description="dask: scheduler address, e.g. "
                                     "tcp://10.0.0.5:8786; None: a local cluster")
    dask_workers: int = Field(2, ge=1, description="dask: worker processes of the local "
                              "cluster (one thread each)")

    @model_validator(mode="after")
    def _check_address(self) -> RunnerConfig:
        if self.dask_address and self.kind != "dask":
            raise ValueError(f"dask_address={self.dask_address!r} needs kind='dask', "
                             f"got kind={self.kind!r}")
        return self


class PipelineConfig(Strict):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    drift: DriftConfig = DriftConfig()
    resilience: ResilienceConfig = ResilienceConfig()
    gates: GateConfig = GateConfig()
    registry: RegistryConfig = RegistryConfig()
    output_dir: Path = Field(Path("pno-output"), description="data, checkpoints and reports")
    tracking_uri: str | None = Field(None, description="MLflow URI; None: $MLFLOW_TRACKING_URI "
                                     "or sqlite:///<cwd>/mlflow.db")
    experiment: str = "pno-physics-bench"
    torch_threads: int = Field(2, ge=1)
    runner: RunnerConfig = RunnerConfig()

    def resolved_tracking_uri(self) -> str:
        return resolve_tracking_uri(self.tracking_uri)

    @property
    def registered_model_name(self) -> str:
        return self.registry.name_for(self.data.pde)


class MonitorConfig(Strict):
    """The drift monitor: which landing folder it watches and which champion it checks against.

    New HDF5 files (the dataset layout of ``pdes/dataset.py``) dropped into ``landing_dir`` are
    validated, compared with the champion's training features and scored; the ledger of
    processed files lives in ``landing_dir/.state/``."""

    landing_dir: Path = Field(Path("pno-output/landing"), description="folder watched for "
                              "*.h5 / *.hdf5 files (write them elsewhere and move them in)")
    pde: PDEName = Field("darcy", description="PDE of the monitored model (its drift columns "
                         "and its default registered name)")
    model_name: str | None = Field(None, min_length=1, description="registered model whose "
                                   "'champion' alias is monitored; None: pno-<pde>")
    tracking_uri: str | None = Field(None, description="MLflow URI; None: $MLFLOW_TRACKING_URI "
                                     "or sqlite:///<cwd>/mlflow.db")
    experiment: str = "pno-monitor"
    output_dir: Path = Field(Path("pno-output/monitor"), description="per-run working files "
                             "(GX results, drift reports) before they go to MLflow")
    drift: DriftConfig = DriftConfig()
    n_samples: int = Field(32, ge=2, description="predictive samples per input when scoring")
    level: float = Field(0.9, gt=0.0, lt=1.0, description="central interval level of coverage")
    torch_threads: int = Field(2, ge=1)

    def resolved_tracking_uri(self) -> str:
        return resolve_tracking_uri(self.tracking_uri)

    @property
    def registered_model_name(self) -> str:
        return self.model_name or f"pno-{self.pde}"

    @property
    def drift_columns(self) -> tuple[str, ...]:
        return self.drift.columns_for(self.pde)

    @property
    def ledger_path(self) -> Path:
        return self.landing_dir / ".state" / "ledger.json"


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "smoke": {
        "data": {"n_train": 48, "n_val": 8, "n_calib": 8, "n_test": 8, "n_current": 24,
                 "n_rollout": 4, "rollout_steps": 2},
        "model": {"width": 8, "modes": 4, "n_layers": 2, "projection_width": 16},
        "train": {"epochs": 2, "pno_epochs": 2, "batch_size": 16},
        "eval": {"n_samples": 20, "decomposition_draws": 4, "rollout_paths": 4},
        "resilience": {"load_requests": 20, "load_threads": 2, "retry_delay_seconds": 0.05},
        # a two-epoch model is not accurate: the smoke run checks plumbing, not quality
        "gates": {"max_rel_l2": 10.0, "min_coverage": 0.0, "calibration_tolerance": 1.0},
    },
}


# Per-PDE settings applied under every preset: periodic PDEs need no padding; 1D fields keep
# more modes. PDE_SMOKE shrinks each PDE for the smoke preset.
PDE_DEFAULTS: dict[str, dict[str, Any]] = {
    "darcy": {},
    "burgers": {"model": {"modes": 16, "padding": 0}},
    "ks": {"model": {"modes": 16, "padding": 0}},
    # 64x64 fields cost 4x a 32x32 Darcy sample: fewer samples and epochs keep the run in minutes.
    # Rollouts: the forcing spins the flow up, and at dt 0.025 the CFL number passes the solver's
    # limit 0.5 near t = 22 (max over 16 samples: 0.42 at t = 15, 0.56 at t = 25), so 3 steps
    "navier_stokes": {"model": {"modes": 12, "padding": 0, "width": 24},
                      "data": {"n_train": 400, "n_test": 50, "rollout_steps": 3},
                      "train": {"epochs": 15, "pno_epochs": 12}},
}
PDE_SMOKE: dict[str, dict[str, Any]] = {
    "darcy": {"data": {"resolution": 16}, "model": {"padding": 2}},
    "burgers": {"data": {"resolution": 64}},
    "ks": {"data": {"resolution": 64, "params": {"t_burn": 20.0}}},
    "navier_stokes": {"data": {"resolution": 32, "params": {"t_final": 1.0, "n_frames": 3}}},
}


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.epochs=5", "data.current_tau=5"]`` -> nested dict; values parsed as JSON when
    they are JSON (numbers, booleans, null, lists), else kept as strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not of the form key=value "
                             "(e.g. train.epochs=5)")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def build_config(preset: str = "default",
                 overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """The preset's settings with ``overrides`` applied on top, validated."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    overrides = overrides or {}
    pde = overrides.get("data", {}).get("pde", "darcy")
    if pde not in PDE_DEFAULTS:
        raise ValueError(f"unknown PDE {pde!r}; choose one of {sorted(PDE_DEFAULTS)}")
    merged = _deep_merge(PDE_DEFAULTS[pde], PRESETS[preset])
    if preset == "smoke":
        # a smoke model registers apart: never gated against, nor replacing, a real champion
        merged = _deep_merge(merged, {**PDE_SMOKE[pde],
                                      "registry": {"model_name": f"pno-{pde}-smoke"}})
    merged = _deep_merge(merged, overrides)
    try:
        return PipelineConfig.model_validate(merged)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise ValueError("invalid configuration:\n" + "\n".join(lines)) from e


def flatten(config: PipelineConfig) -> dict[str, Any]:
    """Dotted ``section.key -> value`` view (MLflow params)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = node

    walk("", config.model_dump(mode="json"))
    return out
