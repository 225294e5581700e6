"""docker-compose.yml and the Dockerfile: no Docker engine runs here, so check
what can be checked without one: the file parses, the services are wired as
documented, and the commands the containers run work."""
from __future__ import annotations

import os
import subprocess
import sys

import yaml

from conftest import REPO


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_has_the_services_wired_together():
    services = _compose()["services"]
    assert {"api", "worker", "redis", "postgres", "migrate"} <= set(services)
    for name in ("api", "worker", "worker-cpu"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["DATABASE_URL"]
        assert env["REDIS_URL"].startswith("redis://redis:")
        # One media volume shared by the API (serves PNGs) and the workers (write them).
        assert "media:/data/media" in services[name]["volumes"] and env["RGUIDE_MEDIA_DIR"] == "/data/media"
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "media" in _compose()["volumes"]
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert services["api"]["command"][:2] == ["rguide", "api"]
    assert services["worker"]["command"][:2] == ["rguide", "worker"]


def test_worker_reserves_an_nvidia_gpu():
    devices = _compose()["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "cu" in _compose()["services"]["worker"]["build"]["args"]["TORCH_INDEX_URL"]


def test_dockerfile_installs_torch_first_and_runs_the_api():
    text = (REPO / "Dockerfile").read_text()
    assert text.index("torch==") < text.index('pip install -e ".[postgres]"')
    assert 'CMD ["rguide", "api"' in text


def test_the_migrate_service_command_builds_the_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'compose.db'}"
    env = {**os.environ, "DATABASE_URL": url}
    alembic = [sys.executable, "-m", "alembic"]
    out = subprocess.run([*alembic, "upgrade", "head"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    current = subprocess.run([*alembic, "current"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert "(head)" in current.stdout


def test_a_multi_gpu_profile_runs_one_worker_per_gpu_in_one_container():
    svc = _compose()["services"]["worker-gpus"]
    assert svc["command"] == ["rguide", "worker", "--gpus", "all"] and svc["profiles"] == ["multi-gpu"]
    assert svc["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
