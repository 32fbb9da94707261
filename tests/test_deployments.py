"""prefect.yaml: every deployment's entrypoint imports, its parameters exist in the flow's
signature and validate into the flow's config (overriding defaults), and its schedule parses.
(`prefect deploy --all` against a real server is the integration tests' job.)"""

from __future__ import annotations

import inspect
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.flows import load_flow_from_entrypoint

from model.methods import METHODS
from pno.config import MonitorConfig, PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENTS = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())
               ["deployments"]}


def test_the_deployments_a_team_needs_are_declared():
    assert set(DEPLOYMENTS) >= {"nightly-robustness", "manual-robustness", "drift-monitor",
                                "manual-training", "benchmark-comparison"}
    assert all(d["work_pool"]["name"] == "pno-process" for d in DEPLOYMENTS.values())
    nightly = DEPLOYMENTS["nightly-robustness"]["schedules"]
    assert [CronSchedule(**s).cron for s in nightly] == ["0 2 * * *"]
    monitor = DEPLOYMENTS["drift-monitor"]
    assert [IntervalSchedule(**s).interval for s in monitor["schedules"]] == [
        timedelta(minutes=15)]
    assert monitor["concurrency_limit"] == 1  # two monitors must not share one ledger
    for name in ("manual-robustness", "manual-training", "benchmark-comparison"):
        assert "schedules" not in DEPLOYMENTS[name], name


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_entrypoint_imports_and_parameters_validate(name: str):
    deployment = DEPLOYMENTS[name]
    path, func = deployment["entrypoint"].split(":")
    assert (ROOT / path).is_file() and path.startswith("flows/")
    flow = load_flow_from_entrypoint(f"{ROOT / path}:{func}", use_placeholder_flow=False)
    params = deployment.get("parameters") or {}
    assert set(params) <= set(inspect.signature(flow.fn).parameters), params
    validated = flow.validate_parameters(params)
    config = validated.get("config")
    assert config is None or isinstance(config, PipelineConfig | MonitorConfig)


def test_parameters_override_config_defaults():
    def config(name: str) -> PipelineConfig | MonitorConfig:
        path, func = DEPLOYMENTS[name]["entrypoint"].split(":")
        flow = load_flow_from_entrypoint(f"{ROOT / path}:{func}", use_placeholder_flow=False)
        return flow.validate_parameters(DEPLOYMENTS[name]["parameters"])["config"]

    bench = config("benchmark-comparison")
    assert bench.train.methods == tuple(METHODS) and bench.train.n_seeds == 3
    assert bench.train.epochs == PipelineConfig().train.epochs  # the rest keeps its default
    monitor = config("drift-monitor")
    assert monitor.landing_dir == Path("pno-output/landing")
    assert monitor.registered_model_name == "pno-darcy"
    assert config("manual-training").train.methods == ("fno", "pno-dropout")
