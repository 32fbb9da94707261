"""The stack a team reviews with, for real: a Prefect server and an MLflow tracking server on free
loopback ports (``pno/stack.py``), the deployments of ``prefect.yaml`` served by a process
worker, the nightly deployment run with a smoke-sized config, its MLflow run checked through the
REST API and in the MLflow UI (headless Chromium), ``pno run`` against the same servers, and
nothing left running afterwards (also for ``pno up`` stopped by Ctrl-C)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import psutil
import pytest

from pno.config import build_config
from pno.stack import Stack, alive, group_members, http_ok

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
NIGHTLY = "robustness-pipeline/nightly-robustness"
MONITOR = "drift-monitor/drift-monitor"


def rest(url: str, payload: dict | None = None) -> dict | list:
    """GET ``url`` (POST ``payload`` as JSON when given); the decoded JSON answer."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def mlflow_api(stack: Stack, endpoint: str, **query: str) -> dict:
    return rest(f"{stack.mlflow_url}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}")


def artifact_paths(stack: Stack, run_id: str, path: str = "") -> set[str]:
    """Every artifact file of a run, walked through ``artifacts/list``."""
    listing = mlflow_api(stack, "artifacts/list", run_id=run_id, path=path).get("files", [])
    found: set[str] = set()
    for f in listing:
        found |= artifact_paths(stack, run_id, f["path"]) if f["is_dir"] else {f["path"]}
    return found


def artifact_text(stack: Stack, run: dict, path: str) -> str:
    """One artifact's content, from the server's artifact proxy."""
    exp, run_id = run["info"]["experiment_id"], run["info"]["run_id"]
    url = f"{stack.mlflow_url}/api/2.0/mlflow-artifacts/artifacts/{exp}/{run_id}/artifacts/{path}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read().decode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """Both servers on free loopback ports; no scheduler, so only the runs a test starts run."""
    with Stack(tmp_path_factory.mktemp("stack"), scheduler=False, timeout=240) as s:
        yield s


@pytest.fixture(scope="module")
def nightly(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Work pool, ``prefect --no-prompt deploy --all`` from the repo root, a worker, and one run
    of the nightly deployment with a smoke-sized config, watched to the end."""
    out = tmp_path_factory.mktemp("nightly")
    deployed = stack.deploy(REPO)
    stack.start_worker(REPO, poll_seconds=2)
    cfg = build_config("smoke", {"output_dir": str(out / "pno-output"),
                                 "tracking_uri": stack.mlflow_url})
    params = json.dumps({"config": cfg.model_dump(mode="json")})
    t0 = time.monotonic()
    watched = stack.prefect("deployment", "run", NIGHTLY, "--params", params, "--watch",
                            "--watch-interval", "2", "--watch-timeout", "420", timeout=480)
    deployment = rest(f"{stack.prefect_api_url}/deployments/name/{NIGHTLY}")
    runs = rest(f"{stack.prefect_api_url}/flow_runs/filter",
                {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}})
    return {"deployed": deployed, "watched": watched, "deployment": deployment, "config": cfg,
            "flow_runs": runs, "seconds": time.monotonic() - t0, "output": out}


@pytest.fixture(scope="module")
def mlflow_run(stack: Stack, nightly: dict) -> dict:
    """The MLflow run of the nightly flow run (its name ends with the flow run's name)."""
    exp = mlflow_api(stack, "experiments/get-by-name",
                     experiment_name="pno-physics-bench")["experiment"]
    runs = rest(f"{stack.mlflow_url}/api/2.0/mlflow/runs/search",
                {"experiment_ids": [exp["experiment_id"]], "max_results": 10})["runs"]
    name = nightly["flow_runs"][0]["name"]
    matching = [r for r in runs if r["info"]["run_name"].endswith(name)]
    assert len(matching) == 1, [r["info"]["run_name"] for r in runs]
    return matching[0]


def test_nightly_deployment_runs_on_the_worker(nightly: dict):
    for name in ("nightly-robustness", "manual-robustness"):
        assert f"robustness-pipeline/{name}" in nightly["deployed"]
    assert nightly["deployment"]["work_pool_name"] == "pno-process"
    [run] = nightly["flow_runs"]
    assert run["state"]["type"] == "COMPLETED", (run["state"], nightly["watched"][-3000:])
    assert run["work_pool_name"] == "pno-process"
    assert run["parameters"]["config"]["data"]["n_train"] == 48  # the smoke config, not default
    assert nightly["seconds"] < 420


def test_mlflow_run_holds_report_gx_result_and_drift_report(stack: Stack, mlflow_run: dict):
    assert mlflow_run["info"]["status"] == "FINISHED"
    files = artifact_paths(stack, mlflow_run["info"]["run_id"])
    for expected in ("report/report.md", "report/report.json", "expectations/gx_train.json",
                     "drift/drift_report.html"):
        assert expected in files, sorted(files)
    report = json.loads(artifact_text(stack, mlflow_run, "report/report.json"))
    assert report["overall_status"] == "PASS", report["failed_gates"]
    gx = json.loads(artifact_text(stack, mlflow_run, "expectations/gx_train.json"))
    assert gx["success"] is True
    metrics = {m["key"] for m in mlflow_run["data"]["metrics"]}
    assert {"pno-dropout.crps", "drift.drifted_share", "report.gates_passed"} <= metrics


def test_champion_alias_points_at_the_run(stack: Stack, nightly: dict, mlflow_run: dict):
    """The first run whose gates pass becomes the champion of its registered model."""
    name = nightly["config"].registered_model_name
    model = mlflow_api(stack, "registered-models/get", name=name)["registered_model"]
    metrics = {m["key"]: m["value"] for m in mlflow_run["data"]["metrics"]}
    aliases = {a["alias"]: a["version"] for a in model.get("aliases", [])}
    assert "champion" in aliases, (model, {k: v for k, v in metrics.items() if "regist" in k})
    version = mlflow_api(stack, "registered-models/alias", name=name,
                         alias="champion")["model_version"]
    assert version["run_id"] == mlflow_run["info"]["run_id"]
    assert version["version"] == aliases["champion"] == str(int(metrics["registry.version"]))


def chromium(url: str, profile: Path, *args: str, budget_ms: int = 20000) -> str:
    """Headless Chromium on ``url``: its stdout (the DOM with --dump-dom)."""
    argv = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-quic", "--no-first-run",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
            f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *args, url]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_mlflow_ui_shows_the_run_and_its_report(stack: Stack, mlflow_run: dict, tmp_path: Path):
    if not CHROMIUM.exists():
        # .ci/run installs Debian's chromium and sets PNO_REQUIRE_CHROMIUM: a skip there would
        # hide a broken set-up
        if os.environ.get("PNO_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"{CHROMIUM} is missing but PNO_REQUIRE_CHROMIUM=1")
        pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium, as .ci/run does)")
    info = mlflow_run["info"]
    page = f"{stack.mlflow_url}/#/experiments/{info['experiment_id']}/runs/{info['run_id']}"
    dom = chromium(page, tmp_path / "profile", "--dump-dom")
    assert info["run_name"] in dom
    report_page = f"{page}/artifacts/report/report.md"
    dom = chromium(report_page, tmp_path / "profile", "--dump-dom")
    heading = next(line.lstrip("# ").strip() for line in
                   artifact_text(stack, mlflow_run, "report/report.md").splitlines()
                   if line.startswith("# "))
    assert "report.md" in dom and heading in dom, heading  # the rendered Markdown
    shot = tmp_path / "mlflow-run-report.png"
    chromium(report_page, tmp_path / "profile", f"--screenshot={shot}",
             "--window-size=1400,1000", "--hide-scrollbars")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("PNO_TEST_ARTIFACTS"):
        keep = Path(os.environ["PNO_TEST_ARTIFACTS"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep / shot.name)


def test_pno_run_uses_the_servers_from_the_environment(stack: Stack, tmp_path: Path):
    """PREFECT_API_URL and MLFLOW_TRACKING_URI set: the flow run is on the stack's Prefect
    server and the MLflow run on its tracking server (no mlflow.db in the working folder)."""
    cmd = [sys.executable, "-m", "pno.cli", "run", "--preset", "smoke", "--out",
           str(tmp_path / "out")]
    res = subprocess.run(cmd, cwd=tmp_path, env=stack.client_env(), capture_output=True,
                         text=True, timeout=400, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    assert f"Prefect={stack.prefect_api_url}" in res.stdout
    run_id = re.search(r"MLflow run: (\w+)", res.stdout).group(1)
    assert f"Browse:     {stack.mlflow_url}/#/experiments/" in res.stdout
    run = mlflow_api(stack, "runs/get", run_id=run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    flow_runs = rest(f"{stack.prefect_api_url}/flow_runs/filter",
                     {"flow_runs": {"deployment_id": {"is_null_": True}}})
    assert any(run["info"]["run_name"].endswith(f["name"]) and f["state"]["type"] == "COMPLETED"
               for f in flow_runs)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_stopping_the_stack_leaves_no_process(stack: Stack):
    procs = stack.processes()
    leaders = [s.proc.pid for s in stack.services]
    assert len(leaders) >= 2 and len(procs) >= len(leaders)
    stack.stop()
    assert alive(procs) == []
    assert all(group_members(pgid) == [] for pgid in leaders)
    assert not port_open(stack.prefect_port) and not port_open(stack.mlflow_port)


def flow_runs_of(prefect: str, deployment: str, state_type: str) -> list[dict]:
    """Flow runs of ``deployment`` (flow/name) in state type ``state_type``, on the server."""
    dep = rest(f"{prefect}/deployments/name/{deployment}")
    return rest(f"{prefect}/flow_runs/filter",
                {"flow_runs": {"deployment_id": {"any_": [dep["id"]]},
                               "state": {"type": {"any_": [state_type]}}}})


def wait_for(what: str, probe, timeout: float):  # noqa: ANN001, ANN201
    """``probe()`` once it is truthy, polled every 2 s; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(2)
    return found


def test_pno_up_serves_until_ctrl_c_and_leaves_no_process(tmp_path: Path):
    """What a new user does: ``pno up --worker`` from a project folder; the scheduler creates
    the scheduled runs of the nightly and of the drift monitor, a run of the monitor started by
    hand completes on the worker; Ctrl-C then stops servers, worker and flow runs. (The project
    folder is a copy of prefect.yaml and flows/, so that the monitor's landing folder is under
    tmp_path, not in the repository.)"""
    project = tmp_path / "project"
    shutil.copytree(REPO / "flows", project / "flows",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "prefect.yaml", project / "prefect.yaml")
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "pno.cli", "up", "--state-dir", str(state),
                             "--worker", "--project-dir", str(project)],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any("Ctrl-C stops" in x for x in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        assert any("Deployed:" in x and "robustness-pipeline/nightly-robustness" in x
                   for x in lines), "".join(lines)
        exports = dict(re.findall(r"(\w+)=(\S+)", next(x for x in lines if "export " in x)))
        prefect, mlflow = exports["PREFECT_API_URL"], exports["MLFLOW_TRACKING_URI"]
        assert http_ok(f"{prefect}/health") and http_ok(f"{mlflow}/health")
        nightly = wait_for("scheduled nightly run", lambda: flow_runs_of(
            prefect, NIGHTLY, "SCHEDULED"), 90)
        starts = {r["expected_start_time"][11:19] for r in nightly}
        assert starts == {"02:00:00"}, starts  # cron 0 2 * * * in UTC
        # the monitor's runs every 15 minutes, the first one a quarter of an hour after deploy
        scheduled = wait_for("scheduled monitor run", lambda: flow_runs_of(
            prefect, MONITOR, "SCHEDULED"), 90)
        starts = sorted(datetime.fromisoformat(r["expected_start_time"]) for r in scheduled)
        gaps = {b - a for a, b in zip(starts, starts[1:], strict=False)}
        assert gaps == {timedelta(minutes=15)}, starts
        # run it now, as a user would to try it, and see the worker complete it
        env = {**os.environ, "PREFECT_API_URL": prefect, "PREFECT_HOME": str(state / "prefect")}
        env.pop("MLFLOW_TRACKING_URI", None)
        subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", MONITOR],
                       env=env, check=True, capture_output=True, timeout=120)
        monitor = wait_for("completed drift-monitor run", lambda: flow_runs_of(
            prefect, MONITOR, "COMPLETED"), 180)
        assert monitor[0]["work_pool_name"] == "pno-process"
        servers = psutil.Process(proc.pid).children(recursive=True)  # in their own sessions
        assert len(servers) >= 3 and all(os.getpgid(p.pid) != proc.pid for p in servers)
        os.kill(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, "".join(lines) + output
    assert "stopping the stack" in output and "Stopped." in output
    assert alive(servers) == []
    assert not http_ok(f"{prefect}/health") and not http_ok(f"{mlflow}/health")
