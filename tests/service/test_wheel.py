"""The built wheel runs the whole service, without the source tree.

Builds the wheel from a copy of this checkout (no network: setuptools comes
from the running environment), installs it into a fresh venv, and uses only
that venv, from a directory outside the repository with PYTHONPATH unset:
migrations on a fresh SQLite file (`rguide keys create`), the API with a
worker (`rguide up` with the embedded defaults), a survey study generated,
its pages and static files served, and the statistics report rendered (over
HTTP and by `rguide stats --html`).

torch and the other dependencies come from the running environment through a
.pth file that lists its site-packages: lines of a .pth are added to sys.path,
but .pth files inside that directory are not processed, so the editable
install of this project there (its import hook) does not load. The wheel is
installed by the running pip in `--python` mode, which shows the fresh venv
pip alone, so pip neither sees nor touches the editable install.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import venv
import zipfile
from pathlib import Path

import httpx
import pytest
from conftest import REPO, wait_for_http

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

PACKAGES = ("model_core", "app", "worker", "rguide")
# Not part of a build: environments, data, build outputs (at the top of the tree).
SKIP_TOP = {".git", ".venv", "rguide-data", "runs", "out", "checkpoints", "test-artifacts", "build", "dist",
            ".pytest_cache", ".hypothesis"}
# Variables that would point the service (or Python) elsewhere than the fresh venv and data dir.
CLEARED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "DATABASE_URL", "REDIS_URL",
           "RGUIDE_BROKER_URL", "RGUIDE_MEDIA_DIR", "RGUIDE_QUEUE", "RGUIDE_PRESET", "RGUIDE_HOST",
           "RGUIDE_DATA_DIR", "RGUIDE_PORT", "RGUIDE_CHECKPOINT_DIR")
SHIPPED = [  # files the service reads at run time, which a wheel of .py files alone would lack
    "app/templates/report.html", "app/templates/report/_style.html", "app/templates/survey/base.html",
    "app/templates/survey/pair.html", "app/templates/survey/researcher_login.html",
    "app/static/survey/survey.css", "app/static/survey/survey.js", "app/static/survey/favicon.svg",
    "worker/migrations/env.py", "worker/migrations/script.py.mako",
    "worker/migrations/versions/0001_generation_service.py",
    "model_core/data/imagenet_classes.txt", "model_core/data/presets/demo.json",
    "model_core/data/presets/tiny.json", "model_core/data/presets/imagenet128.json",
    "model_core/weights/demo/diffusion.pt", "model_core/weights/demo/classifier_robust.pt",
    "model_core/weights/demo/classifier_vanilla.pt", "model_core/weights/demo/features.pt",
]


def _ignore(directory: str, names: list[str]) -> set[str]:
    top = Path(directory).resolve() == REPO.resolve()
    return {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".egg-info")) or (top and n in SKIP_TOP)}


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 180), check=False, **kw)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_wheel(tmp_path: Path) -> Path:
    src, dist = tmp_path / "src", tmp_path / "dist"
    # A copy, so the build writes its build/ and egg-info there and not into the checkout.
    shutil.copytree(REPO, src, symlinks=True, ignore=_ignore)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(dist), str(src)], timeout=300)
    (wheel,) = dist.glob("robust_guidance-*.whl")
    return wheel


def fresh_venv(root: Path, wheel: Path) -> Path:
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    python = root / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], timeout=300)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "_rguide_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_the_wheel_installs_and_runs_the_whole_service(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    missing = [n for n in SHIPPED if n not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]

    # The venv lies inside an unrelated git repository: code_version must not report its commit.
    other = tmp_path / "other-project"
    other.mkdir()
    has_git = shutil.which("git") is not None
    if has_git:
        _run(["git", "init", "-q", str(other)])
        _run(["git", "-C", str(other), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
              "--allow-empty", "-m", "unrelated"])
    python = fresh_venv(other / "venv", wheel)
    rguide = other / "venv" / "bin" / "rguide"
    fresh = (other / "venv").resolve()

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1", RGUIDE_DATA_DIR=str(tmp_path / "data"))

    probe = _run([str(python), "-c", (
        "import sys, importlib\n"
        f"for name in {PACKAGES!r}: print(name, importlib.import_module(name).__file__)\n"
        "from model_core.provenance import code_version; print('version', code_version())\n"
        "from worker import db; print('head', db.head_revision())\n"
        "print('finders', [getattr(f, '__name__', type(f).__name__) for f in sys.meta_path])")], cwd=cwd, env=env)
    lines = dict(line.split(" ", 1) for line in probe.stdout.splitlines())
    for name in PACKAGES:
        where = Path(lines[name]).resolve()
        assert where.is_relative_to(fresh) and "site-packages" in where.parts, probe.stdout
    assert "_EditableFinder" not in lines["finders"], probe.stdout
    assert lines["version"] == "0.1.0", probe.stdout  # no "+g<commit>" from the other repository
    assert lines["head"] not in ("", "None"), probe.stdout

    # Migrations on a fresh SQLite file, from the packaged migrations.
    made = _run([str(rguide), "keys", "create", "--name", "wheel-test"], cwd=cwd, env=env)
    key = made.stdout.strip().splitlines()[-1]
    assert (tmp_path / "data" / "rguide.db").is_file()

    # The statistics report from the installed package, on a small synthetic study.
    votes, html = tmp_path / "votes.csv", tmp_path / "report.html"
    _run([str(python), "-c", (
        "import sys\nfrom app.stats.export import write_votes_csv\nfrom app.stats.synthetic import synthetic_study\n"
        "write_votes_csv(sys.argv[1], synthetic_study(n_pairs=12, raters_min=3, raters_max=5, mean_raters=4, "
        "n_raters=12, n_classes=10, seed=3))"), str(votes)], cwd=cwd, env=env)
    _run([str(rguide), "stats", str(votes), "--html", str(html), "--title", "Wheel report"], cwd=cwd, env=env)
    page = html.read_text()
    assert "<title>Wheel report" in page and "<table" in page and "<svg" in page

    # The API and a worker, as `rguide up` starts them.
    port = _free_port()
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(rguide), "up", "--port", str(port), "--preload", "none", "--threads", "1"],
                                cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def tail() -> str:
            return log_path.read_text(errors="replace")[-3000:]

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            wait_for_http(f"http://127.0.0.1:{port}", "/readyz", proc, log_path, timeout=120)
            assert http.get("/healthz").json() == {"status": "ok"}
            presets = http.get("/v1/presets")
            assert presets.status_code == 200 and {"demo", "tiny"} <= {p["name"] for p in presets.json()["presets"]}

            hdr = {"Authorization": f"Bearer {key}"}
            r = http.post("/v1/surveys", headers=hdr, json={"title": "Wheel study", "preset": "tiny", "steps": "ddim4",
                                                            "seed": 5, "num_pairs": 2, "raters_per_pair": 1})
            assert r.status_code == 202, r.text
            sid = r.json()["id"]
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                study = http.get(f"/v1/surveys/{sid}", headers=hdr).json()
                if study["status"] != "generating":
                    break
                time.sleep(0.3)
            assert study["status"] == "open", (study, tail())

            # A rater's pages: the landing page, then a pair with its images, and the stylesheet.
            landing = http.get(f"/s/{sid}")
            assert landing.status_code == 200 and "Wheel study" in landing.text, landing.text
            csrf = re.search(r'name="csrf" value="([^"]*)"', landing.text).group(1)
            pair = http.post(f"/s/{sid}/start", data={"csrf": csrf, "consent": "yes"}, follow_redirects=True)
            assert pair.status_code == 200 and 'name="pair"' in pair.text, pair.text
            images = re.findall(r'<img[^>]+src="([^"]+)"', pair.text)
            assert len(images) == 2, pair.text
            assert all(http.get(src).content.startswith(b"\x89PNG") for src in images)
            assert "/static/survey/survey.css" in pair.text
            css = http.get("/static/survey/survey.css")
            assert css.status_code == 200 and css.headers["content-type"].startswith("text/css") and css.text
            fields = {name: re.search(rf'name="{name}" value="([^"]*)"', pair.text).group(1) for name in ("csrf", "pair")}
            voted = http.post(f"/s/{sid}/vote", data={**fields, "answer": "left"}, follow_redirects=True)
            assert voted.status_code == 200, voted.text

            # The researcher's pages and the study's report, rendered by the service.
            login = http.get("/researcher/login")
            assert login.status_code == 200 and 'name="api_key"' in login.text
            listed = http.post("/researcher/login", data={"api_key": key}, follow_redirects=True)
            assert listed.status_code == 200 and "Wheel study" in listed.text, listed.text
            report = http.get(f"/v1/surveys/{sid}/report", headers=hdr, params={"n_boot": 0})
            assert report.status_code == 200 and "Wheel study" in report.text and "<table" in report.text, report.text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: `rguide up` stops its worker
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
