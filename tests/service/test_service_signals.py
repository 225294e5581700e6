"""A stopped service stops, and a client cannot choose its own address (issue 11, items 5 and 6).

Real processes: ``rguide up`` with a worker, ``rguide api`` behind no proxy.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from conftest import REPO, wait_for_http
from test_service_up import SERVICE_VARS, _children, free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(300)]


def _env(tmp_path, port, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env.update(RGUIDE_DATA_DIR=str(tmp_path / "data"), RGUIDE_PORT=str(port), PYTHONUNBUFFERED="1", **extra)
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but not yet reaped by its parent.
    stat = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(stat) and not stat.startswith("Z")


def _wait(predicate, timeout: float, what: str, log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"{what}; log:\n{log.read_text(errors='replace')[-3000:]}")


def _up(tmp_path):
    port = free_port()
    log = tmp_path / "up.log"
    proc = subprocess.Popen([str(REPO / ".venv/bin/rguide"), "up", "--workers", "1", "--preload", "tiny"],
                            cwd=REPO, env=_env(tmp_path, port, RGUIDE_PRESET="tiny"), stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_http(f"http://127.0.0.1:{port}", "/readyz", proc, log)
    (worker,) = _children(proc.pid)
    return proc, worker, log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_rguide_up_alone_stops_its_worker_too(tmp_path, sig):
    proc, worker, log = _up(tmp_path)
    try:
        os.kill(proc.pid, sig)  # the process only, as a service manager or `kill PID` does; not its group
        assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")[-3000:]  # a requested stop is clean
        _wait(lambda: not _alive(worker), 30, f"worker {worker} outlived rguide up after {sig.name}", log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_worker_dies_with_rguide_up_even_after_sigkill(tmp_path):
    proc, worker, log = _up(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup can run in rguide up itself
        proc.wait(timeout=30)
        _wait(lambda: not _alive(worker), 30, f"worker {worker} was orphaned by a SIGKILL of rguide up", log)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_rotating_x_forwarded_for_does_not_escape_the_rate_limit(tmp_path):
    port = free_port()
    log = tmp_path / "api.log"
    proc = subprocess.Popen([str(REPO / ".venv/bin/rguide"), "api", "--no-reaper"], cwd=REPO,
                            env=_env(tmp_path, port, RGUIDE_RATE_LIMIT="3/minute"), stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url, "/healthz", proc, log, timeout=120)
        codes = []
        for i in range(5):  # an invalid body: counted, then refused, nothing queued
            r = httpx.post(f"{url}/v1/generations", json={"class_labels": [0], "guidance": "nope"},
                           headers={"X-Forwarded-For": f"198.51.100.{i}", "X-Real-IP": f"198.51.100.{i}"})
            codes.append(r.status_code)
        assert codes == [422, 422, 422, 429, 429], codes
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
