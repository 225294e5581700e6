"""What the survey's browser tests share: Debian's Chromium through Playwright, `rguide up` as a user starts it,
a recorder of every request a page makes, and studies made over the API.

Import the fixtures into a test module (``from survey_browser_support import browser``) and start the
service with :func:`rguide_up`.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from conftest import REPO, service_unavailable

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"
SERVICE_VARS = ("DATABASE_URL", "REDIS_URL", "RGUIDE_BROKER_URL", "RGUIDE_MEDIA_DIR", "RGUIDE_QUEUE", "RGUIDE_HOST")
# Viewports the pages must work in: a desktop, a small laptop, a phone upright and on its side.
DESKTOP = {"viewport": {"width": 1200, "height": 860}}
LAPTOP = {"viewport": {"width": 1366, "height": 657}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
PHONE_LANDSCAPE = {"viewport": {"width": 844, "height": 390}, "is_mobile": True, "has_touch": True,
                   "device_scale_factor": 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rguide_cmd() -> list[str]:
    exe = REPO / ".venv" / "bin" / "rguide"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "rguide"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        service_unavailable(f"Chromium is not installed at {CHROMIUM} (Debian package 'chromium')")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_unavailable("the playwright Python package is not installed (pip install playwright)")
    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:
            service_unavailable(f"Chromium at {CHROMIUM} does not start: {exc}")
        yield chromium
        chromium.close()


@contextlib.contextmanager
def rguide_up(tmp: Path, **env_extra: str):
    """`rguide up` on a free port with its embedded defaults (and ``env_extra``), and a researcher key."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env.update(RGUIDE_DATA_DIR=str(tmp / "data"), RGUIDE_PORT=str(port), RGUIDE_PRESET="tiny",
               PYTHONUNBUFFERED="1", **env_extra)
    log_path = tmp / "up.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(rguide_cmd() + ["up"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "rguide up not ready:\n" + log_path.read_text(errors="replace")[-3000:]
            time.sleep(0.3)
        made = subprocess.run(rguide_cmd() + ["keys", "create", "--name", "browser test"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        yield SimpleNamespace(url=url, key=made.stdout.strip(), data_dir=tmp / "data", log=log_path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def open_study(up, **body) -> dict:
    """Create a study over the API and wait until its pairs are generated and it is open."""
    headers = {"Authorization": f"Bearer {up.key}"}
    with httpx.Client(base_url=up.url, headers=headers, timeout=30) as http:
        r = http.post("/v1/surveys", json={"preset": "tiny", "steps": "ddim4", **body})
        assert r.status_code == 202, r.text
        location = r.headers["location"]
        deadline = time.monotonic() + 180
        while (study := http.get(location).json())["status"] == "generating":
            assert time.monotonic() < deadline, (study, up.log.read_text(errors="replace")[-3000:])
            time.sleep(0.3)
    assert study["status"] == "open", study
    return study


class Recorder:
    """Every request a browser context makes, and every console error or failed load."""

    def __init__(self, context):
        self.requests: list[str] = []
        self.problems: list[str] = []
        context.on("request", lambda req: self.requests.append(req.url))
        context.on("requestfailed", self._failed)
        context.on("console", lambda msg: msg.type == "error" and self.problems.append(f"console: {msg.text}"))

    def _failed(self, req) -> None:
        # Chromium fetches the favicon after the page has loaded; a click that navigates on before it
        # arrives cancels it (net::ERR_ABORTED). That is the browser's timing, not a broken page.
        if req.url.rsplit("?", 1)[0].endswith("/favicon.svg") and "ERR_ABORTED" in (req.failure or ""):
            return
        self.problems.append(f"failed: {req.url} {req.failure}")


def shot(page, name: str) -> Path:
    """A full-page screenshot in test-artifacts/ (looked at by whoever changes the pages)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def in_view(page, selector: str) -> bool:
    """Whether the element is entirely inside the viewport without scrolling."""
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return (box is not None and box["y"] >= 0 and box["x"] >= 0 and box["y"] + box["height"] <= size["height"]
            and box["x"] + box["width"] <= size["width"])


KEYS = {"left": "ArrowLeft", "right": "ArrowRight", "same": "ArrowDown"}


class RaterBrowser:
    """A rater in a Chromium page; answers are recorded in ``expected`` as (side, how).

    An instructed attention check on screen is followed (its side replaces the one asked
    for) unless ``follow_checks`` is off.
    """

    def __init__(self, page, expected: dict, js: bool = True, follow_checks: bool = True):
        self.page, self.expected, self.js, self.follow_checks = page, expected, js, follow_checks

    @property
    def pair_id(self) -> str:
        return self.page.input_value("input[name=pair]")

    @property
    def done(self) -> bool:
        return self.page.locator("#completion-code").count() > 0

    @property
    def outcome(self) -> str | None:
        found = self.page.locator("#exit")
        return found.get_attribute("data-outcome") if found.count() else None

    def ready(self) -> str:
        if self.js:  # the script enables the buttons once both images are on screen
            self.page.wait_for_selector("#btn-left:not([disabled])", timeout=20000)
            assert self.page.input_value("input[name=loaded]") == "1"
        return self.pair_id

    def answer(self, how: str, side: str, key: str | None = None, tap: bool = False) -> None:
        pair = self.ready()
        instruction = self.page.locator("#check-instruction strong")
        if self.follow_checks and instruction.count():
            side = instruction.inner_text().strip().lower()
            key = KEYS[side] if key else None
        with self.page.expect_navigation():
            if how == "key":
                self.page.keyboard.press(key)
            elif tap:
                self.page.tap(f"#btn-{side}")
            else:
                self.page.click(f"#btn-{side}")
        self.expected[pair] = (side, how if self.js else "form")


def consent(page, tap: bool = False) -> None:
    assert "Which image is more realistic, and more aligned to the description?" in page.content()
    page.check("input[name=consent]")
    with page.expect_navigation():
        (page.tap if tap else page.click)("#start")
