"""A local review stack: a Prefect server, an MLflow tracking server and optionally a Prefect
worker, on loopback, with SQLite databases, artifacts and logs in one state folder.

Each server runs in its own process group (session), so that stopping it reaches the processes
it spawns (MLflow's uvicorn workers, the worker's flow runs): the group gets SIGTERM (the worker
SIGINT: it ignored SIGTERM for over 15 s), then SIGKILL after a grace period, and any descendant
that left the group is killed too. ``Stack`` is a context manager:

    with Stack(Path("pno-output/stack")) as stack:
        os.environ.update(stack.client_env())   # PREFECT_API_URL, MLFLOW_TRACKING_URI
        ...

Layout of the state folder: ``prefect/`` (PREFECT_HOME, ``prefect.db``), ``mlflow.db``,
``mlartifacts/`` (served by MLflow's artifact proxy), ``logs/<service>.log``, ``env.sh``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psutil

from pno import OFFLINE_ENV

HOST = "127.0.0.1"
WORK_POOL = "pno-process"


class StackError(RuntimeError):
    """A server did not start, died, or a set-up command failed (the message has its log)."""


def free_port(host: str = HOST) -> int:
    """A TCP port free on ``host`` now (the OS picks it; another process could take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when GET ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes of ``procs`` still running (zombies count as gone)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            continue
    return out


@dataclass
class Service:
    """One long-running command in its own process group, with its output in ``log``.

    ``health_url``: answers 200 once the service is ready (None: ready when started).
    ``stop_signal`` goes to the whole group first; after ``grace`` seconds the group and every
    descendant seen get SIGKILL.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    health_url: str | None = None
    cwd: Path | None = None
    stop_signal: int = signal.SIGTERM
    grace: float = 20.0
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _seen: dict[int, psutil.Process] = field(default_factory=dict, repr=False)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        return self.running and (self.health_url is None or http_ok(self.health_url))

    def failure(self, what: str) -> StackError:
        """An error naming the service, its exit code and the tail of its log."""
        code = None if self.proc is None else self.proc.poll()
        state = f"exited with code {code}" if code is not None else "is still running"
        return StackError(f"{self.name} {what} ({state}); last lines of {self.log}:\n"
                          f"{tail(self.log) or '(empty log)'}")

    def processes(self) -> list[psutil.Process]:
        """The leader, its process group and its descendants, alive now (also remembered, so
        that :meth:`stop` reaches a descendant that has left the group)."""
        if self.proc is None:
            return []
        found = group_members(self.proc.pid)
        try:
            found += psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            pass
        for p in found:
            self._seen.setdefault(p.pid, p)
        return alive(list(self._seen.values()))

    def stop(self) -> None:
        """``stop_signal`` to the group, wait up to ``grace`` s, then SIGKILL what is left."""
        if self.proc is None:
            return
        self.processes()  # remember the descendants before they are reparented
        try:
            os.killpg(self.proc.pid, self.stop_signal)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and self.processes():
            time.sleep(0.2)
        for p in self.processes():
            try:
                p.kill()
            except psutil.Error:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired as e:
            raise self.failure("did not stop after SIGKILL") from e
        psutil.wait_procs(list(self._seen.values()), timeout=5)


def wait_healthy(services: list[Service], timeout: float) -> None:
    """Wait until every service is healthy; raise :class:`StackError` with the log tail of the
    first that exits or is not healthy within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pending = list(services)
    while pending:
        for s in list(pending):
            if not s.running:
                raise s.failure("exited before it was healthy")
            if s.healthy():
                pending.remove(s)
        if pending and time.monotonic() > deadline:
            raise pending[0].failure(f"was not healthy within {timeout:.0f} s "
                                     f"({pending[0].health_url})")
        time.sleep(0.5)


class Stack:
    """Prefect server + MLflow tracking server (+ optional worker) sharing ``state_dir``.

    Ports default to free loopback ports. ``scheduler=False`` starts Prefect without its
    scheduler service (no scheduled runs are created: tests trigger their own runs).
    """

    def __init__(self, state_dir: Path, prefect_port: int | None = None,
                 mlflow_port: int | None = None, *, scheduler: bool = True,
                 timeout: float = 180.0) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.prefect_port = prefect_port or free_port()
        self.mlflow_port = mlflow_port or free_port()
        self.scheduler, self.timeout = scheduler, timeout
        self.services: list[Service] = []

    @property
    def prefect_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def _base_env(self) -> dict[str, str]:
        env = {**os.environ, **OFFLINE_ENV, "PREFECT_HOME": str(self.state_dir / "prefect")}
        for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_PROFILE"):
            env.pop(key, None)
        return env

    def client_env(self) -> dict[str, str]:
        """The environment of a process that uses the stack (``pno run``, prefect commands, a
        worker): the servers' URLs, the offline switches and the stack's PREFECT_HOME."""
        return {**self._base_env(), "PREFECT_API_URL": self.prefect_api_url,
                "MLFLOW_TRACKING_URI": self.mlflow_url}

    def export_lines(self) -> str:
        return (f"export PREFECT_API_URL={self.prefect_api_url} "
                f"MLFLOW_TRACKING_URI={self.mlflow_url}")

    def _prefect_server(self) -> Service:
        home = self.state_dir / "prefect"
        env = {**self._base_env(), "PREFECT_API_DATABASE_CONNECTION_URL":
               f"sqlite+aiosqlite:///{home / 'prefect.db'}"}
        argv = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST,
                "--port", str(self.prefect_port), "--analytics-off",
                "--scheduler" if self.scheduler else "--no-scheduler"]
        return Service("prefect-server", argv, env, self.logs / "prefect-server.log",
                       f"{self.prefect_api_url}/health")

    def _mlflow_server(self) -> Service:
        env = {**self._base_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        argv = [sys.executable, "-m", "mlflow", "server", "--host", HOST,
                "--port", str(self.mlflow_port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{self.state_dir / 'mlflow.db'}",
                "--artifacts-destination", str(self.state_dir / "mlartifacts")]
        return Service("mlflow-server", argv, env, self.logs / "mlflow-server.log",
                       f"{self.mlflow_url}/health")

    def start(self) -> Stack:
        """Start both servers (in parallel) and wait until both answer their health check."""
        (self.state_dir / "prefect").mkdir(parents=True, exist_ok=True)
        servers = [self._prefect_server(), self._mlflow_server()]
        for s in servers:
            s.start()
            self.services.append(s)
        wait_healthy(servers, self.timeout)
        (self.state_dir / "env.sh").write_text(self.export_lines() + "\n")
        return self

    def prefect(self, *args: str, cwd: Path | None = None, timeout: float = 300.0,
                env: dict[str, str] | None = None) -> str:
        """Run ``prefect ARGS`` against the stack; its output, or :class:`StackError` with it."""
        argv = [sys.executable, "-m", "prefect", *args]
        res = subprocess.run(argv, cwd=cwd, env={**self.client_env(), **(env or {})},
                             capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise StackError(f"`prefect {' '.join(args)}` failed with code {res.returncode}:\n"
                             f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        return res.stdout

    def deploy(self, project_dir: Path, pool: str = WORK_POOL) -> str:
        """Create the process work pool and deploy every deployment of ``project_dir``'s
        ``prefect.yaml`` (its pull step records the folder through $PWD)."""
        project_dir = Path(project_dir).resolve()
        if not (project_dir / "prefect.yaml").is_file():
            raise StackError(f"no prefect.yaml in {project_dir}: deploy from the repository root")
        self.prefect("work-pool", "create", pool, "--type", "process", "--overwrite")
        return self.prefect("--no-prompt", "deploy", "--all", cwd=project_dir,
                            env={"PWD": str(project_dir)})

    def start_worker(self, project_dir: Path, pool: str = WORK_POOL,
                     poll_seconds: float = 5.0) -> Service:
        """Start ``prefect worker start --pool POOL`` and wait until the server lists it."""
        env = {**self.client_env(), "PWD": str(Path(project_dir).resolve()),
               "PREFECT_WORKER_QUERY_SECONDS": str(poll_seconds)}
        argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                "--name", f"pno-worker-{self.prefect_port}"]
        worker = Service("prefect-worker", argv, env, self.logs / "prefect-worker.log",
                         cwd=Path(project_dir).resolve(), stop_signal=signal.SIGINT, grace=20.0)
        worker.start()
        self.services.append(worker)
        deadline = time.monotonic() + self.timeout
        while not self.workers_online(pool):
            if not worker.running:
                raise worker.failure("exited before it registered with the server")
            if time.monotonic() > deadline:
                raise worker.failure(f"did not register within {self.timeout:.0f} s")
            time.sleep(1.0)
        return worker

    def workers_online(self, pool: str = WORK_POOL) -> list[str]:
        """Names of the workers of ``pool`` the Prefect server reports ONLINE."""
        req = urllib.request.Request(f"{self.prefect_api_url}/work_pools/{pool}/workers/filter",
                                     data=b"{}", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                workers = json.load(resp)
        except (urllib.error.URLError, OSError):
            return []
        return [w["name"] for w in workers if w.get("status") == "ONLINE"]

    def dead(self) -> list[Service]:
        """Services that have exited although nobody stopped them."""
        return [s for s in self.services if not s.running]

    def processes(self) -> list[psutil.Process]:
        """Every live process of the stack (all groups and descendants)."""
        return [p for s in self.services for p in s.processes()]

    def stop(self) -> None:
        """Stop the worker first, then the servers; each group is gone when this returns."""
        errors = []
        while self.services:
            try:
                self.services.pop().stop()
            except StackError as e:  # stop the others all the same
                errors.append(str(e))
        if errors:
            raise StackError("\n".join(errors))

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
