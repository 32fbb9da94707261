"""Process handling of ``pno/stack.py`` with stand-in services (no real servers: seconds): health
waits, the log tail of a service that dies, and stops that leave nothing behind, a process that
ignores SIGTERM and one that left the process group included."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from pno.stack import Service, Stack, StackError, alive, free_port, wait_healthy

STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
subprocess.Popen([sys.executable, "-c", child])  # stays in the group, ignores SIGTERM
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                 start_new_session=True)  # leaves the group
time.sleep(120)
"""


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def http_server(tmp_path: Path, name: str = "web") -> Service:
    port = free_port()
    return Service(name, [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                          "--directory", str(tmp_path)],
                   dict(os.environ), tmp_path / f"{name}.log", f"http://127.0.0.1:{port}/")


def test_free_port_can_be_bound():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_stop_reaches_children_that_ignore_sigterm_or_left_the_group(tmp_path: Path):
    svc = Service("stubborn", python(STUBBORN), dict(os.environ), tmp_path / "s.log", grace=1.0)
    svc.start()
    deadline = time.monotonic() + 30
    while len(svc.processes()) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    procs = svc.processes()
    assert len(procs) == 3
    assert len({os.getpgid(p.pid) for p in procs}) == 2  # one child has its own session
    t0 = time.monotonic()
    svc.stop()
    assert alive(procs) == [] and not svc.running
    assert time.monotonic() - t0 < 15  # grace, then SIGKILL


def test_healthy_service_starts_and_stops(tmp_path: Path):
    svc = http_server(tmp_path)
    svc.start()
    try:
        wait_healthy([svc], timeout=30)
        assert svc.healthy()
    finally:
        svc.stop()
    assert not svc.running and svc.proc.returncode is not None


def test_a_service_that_dies_is_reported_with_its_log(tmp_path: Path):
    svc = Service("broken", python("import sys; print('cannot open the database'); sys.exit(3)"),
                  dict(os.environ), tmp_path / "b.log", "http://127.0.0.1:9/")
    svc.start()
    with pytest.raises(StackError, match=r"(?s)broken exited before it was healthy \(exited "
                       r"with code 3\).*cannot open the database"):
        wait_healthy([svc], timeout=30)


def test_a_service_that_never_gets_healthy_times_out(tmp_path: Path):
    svc = Service("mute", python("import time; time.sleep(60)"), dict(os.environ),
                  tmp_path / "m.log", f"http://127.0.0.1:{free_port()}/health")
    svc.start()
    try:
        with pytest.raises(StackError, match="mute was not healthy within 1 s"):
            wait_healthy([svc], timeout=1)
    finally:
        svc.stop()


def test_stack_stops_what_it_started_when_start_fails(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    started: list[Service] = []
    good = http_server(tmp_path, "prefect-stand-in")
    bad = Service("mlflow-stand-in", python("import sys; sys.exit(1)"), dict(os.environ),
                  tmp_path / "bad.log", "http://127.0.0.1:9/")
    monkeypatch.setattr(Stack, "_prefect_server", lambda self: started.append(good) or good)
    monkeypatch.setattr(Stack, "_mlflow_server", lambda self: started.append(bad) or bad)
    with pytest.raises(StackError, match="mlflow-stand-in exited"):
        with Stack(tmp_path / "state", timeout=30):
            pass
    assert [s.running for s in started] == [False, False]


def test_stack_urls_and_client_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere/api")
    stack = Stack(tmp_path, prefect_port=4321, mlflow_port=5432)
    env = stack.client_env()
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4321/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5432"
    assert env["PREFECT_HOME"] == str(tmp_path.resolve() / "prefect")
    assert env["DO_NOT_TRACK"] == "1" and env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert "PREFECT_API_URL" not in stack._base_env()  # servers do not talk to another server
    assert stack.export_lines() == ("export PREFECT_API_URL=http://127.0.0.1:4321/api "
                                    "MLFLOW_TRACKING_URI=http://127.0.0.1:5432")
