"""`rguide up` exactly as the README's first command starts it, with the embedded
defaults (SQLite, the filesystem broker, media under the data directory).

Only the data directory and the port are moved (through RGUIDE_DATA_DIR and
RGUIDE_PORT, which `rguide up` reads) so the test neither touches a user's
./rguide-data nor collides with a server already on port 8000.
"""
from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import time

import httpx
import pytest
from PIL import Image as PILImage

from conftest import REPO, wait_for_http

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

SERVICE_VARS = ("DATABASE_URL", "REDIS_URL", "RGUIDE_BROKER_URL", "RGUIDE_MEDIA_DIR", "RGUIDE_QUEUE",
                "RGUIDE_PRESET", "RGUIDE_HOST")


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README.md has no code block with the two commands"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_starts_with_the_run_and_test_commands():
    commands = readme_commands()
    assert commands[:2] == ["./setup.sh && .venv/bin/rguide up", "./setup.sh --test && .venv/bin/python -m pytest"]


def _start(tmp_path, port):
    start = readme_commands()[0].split("&&", 1)[1].strip()  # setup.sh has run: this is the test run's own setup
    if not (REPO / ".venv" / "bin" / "rguide").exists():
        pytest.fail("no .venv/bin/rguide: run ./setup.sh (the README's first command) first", pytrace=False)
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env.update(RGUIDE_DATA_DIR=str(tmp_path / "data"), RGUIDE_PORT=str(port), PYTHONUNBUFFERED="1")
    log = open(tmp_path / "up.log", "wb")
    proc = subprocess.Popen(["bash", "-c", f"exec {start}"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, tmp_path / "up.log"


def _stop(proc) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_rguide_up_serves_generations_end_to_end(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc, log = _start(tmp_path, port)
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            wait_for_http(url, "/readyz", proc, log)
            assert f"serving on {url}" in log.read_text()

            r = http.post("/v1/generations", json={"preset": "tiny", "class_labels": ["red", 2], "guidance": "pair",
                                                   "steps": "10", "seed": 21})
            assert r.status_code == 202, r.text
            location = r.headers["location"]
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                job = http.get(location).json()
                if job["status"] in ("succeeded", "failed", "canceled"):
                    break
                time.sleep(0.2)
            assert job["status"] == "succeeded", (job, log.read_text(errors="replace")[-3000:])
            assert len(job["images"]) == 4 and len(job["pairs"]) == 2
            for pair in job["pairs"]:
                by_id = {im["id"]: im for im in job["images"]}
                robust, vanilla = by_id[pair["robust"]], by_id[pair["vanilla"]]
                assert robust["seed"] == vanilla["seed"] and robust["label"] == vanilla["label"]
            for im in job["images"]:
                png = http.get(im["url"])
                assert png.status_code == 200
                with PILImage.open(io.BytesIO(png.content)) as decoded:
                    assert decoded.size == (16, 16)
            events = http.get(job["links"]["events"]).text
            assert "event: done" in events and '"status":"succeeded"' in events

            # `rguide up` restarts a worker that dies, and the new one serves requests.
            (worker_pid,) = _children(proc.pid)
            os.kill(worker_pid, signal.SIGKILL)
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and _children(proc.pid) in ([], [worker_pid]):
                time.sleep(0.5)
            assert _children(proc.pid) not in ([], [worker_pid]), log.read_text(errors="replace")[-3000:]
            again = http.post("/v1/generations", json={"preset": "tiny", "class_labels": [3], "guidance": "none",
                                                       "steps": "5"}).json()
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and again["status"] not in ("succeeded", "failed", "canceled"):
                time.sleep(0.3)
                again = http.get(again["links"]["self"]).json()
            assert again["status"] == "succeeded", log.read_text(errors="replace")[-3000:]
        assert (tmp_path / "data" / "rguide.db").is_file()
        assert len(list((tmp_path / "data" / "media").rglob("*.png"))) == 5
    finally:
        code = _stop(proc)
    assert code == 0, log.read_text(errors="replace")[-3000:]
    assert not _group_alive(proc.pid), "a worker outlived rguide up"


def test_rguide_up_refuses_a_busy_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc, log = _start(tmp_path, port)
        try:
            proc.wait(timeout=120)
        finally:
            _stop(proc)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in log.read_text()
