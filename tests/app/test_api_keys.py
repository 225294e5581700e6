"""Researcher API keys (CLI and dependency), key-protected generation, per-key rate limits."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from conftest import REPO, make_settings
from worker import db

BODY = {"preset": "tiny", "class_labels": [0], "guidance": "none", "steps": 3}


def _app(tmp_path, **overrides):
    from app.auth import require_api_key
    from app.keys import ApiKey
    from app.main import create_app

    # Stands in for the survey's researcher-only endpoints.
    router = APIRouter()

    @router.get("/v1/researcher-only")
    def researcher_only(key: ApiKey = Depends(require_api_key)) -> dict:
        return {"name": key.name}

    # rguide.db under the data directory: where `rguide keys --data-dir` puts it.
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'rguide.db'}", redis_url=None,
                             broker_url="filesystem://localhost/", **overrides)
    return TestClient(create_app(settings, run_reaper=False, routers=[router])), settings


def _cli(*args, data_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "RGUIDE_BROKER_URL")}
    return subprocess.run([sys.executable, "-m", "rguide", *args, "--data-dir", str(data_dir)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_keys_cli_creates_a_key_once_lists_and_revokes(tmp_path):
    created = _cli("keys", "create", "--name", "alice lab", data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("rg_") and len(key) > 40 and "only time" in created.stderr

    client, _ = _app(tmp_path)
    with client:
        assert client.get("/v1/researcher-only").status_code == 401
        r = client.get("/v1/researcher-only", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json() == {"name": "alice lab"}
        assert client.get("/v1/researcher-only", headers={"X-API-Key": key}).status_code == 200
        wrong = client.get("/v1/researcher-only", headers={"Authorization": "Bearer rg_wrong"})
        assert wrong.status_code == 401 and wrong.headers["content-type"] == "application/problem+json"

    listed = _cli("keys", "list", data_dir=tmp_path)
    assert "alice lab" in listed.stdout and key not in listed.stdout and key[:10] in listed.stdout
    key_id = listed.stdout.split()[0]
    assert _cli("keys", "revoke", key_id, data_dir=tmp_path).returncode == 0
    with client:
        assert client.get("/v1/researcher-only", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    empty_name = _cli("keys", "create", "--name", " ", data_dir=tmp_path)
    assert empty_name.returncode == 2 and "--name" in empty_name.stderr
    db.dispose_engines()


def test_key_protected_generation_scopes_jobs_to_their_key(tmp_path):
    from app.keys import create_key

    client, settings = _app(tmp_path, generation_requires_key=True)
    with client:
        with db.session_scope(settings.database_url) as s:
            _, alice = create_key(s, "alice")
            _, bob = create_key(s, "bob")
        assert client.post("/v1/generations", json=BODY).status_code == 401
        assert client.get("/v1/generations").status_code == 401
        r = client.post("/v1/generations", json=BODY, headers={"Authorization": f"Bearer {alice}"})
        assert r.status_code == 202
        job_id = r.json()["id"]
        as_bob = {"Authorization": f"Bearer {bob}"}
        assert client.get(f"/v1/generations/{job_id}", headers=as_bob).status_code == 404
        assert client.get("/v1/generations", headers=as_bob).json()["items"] == []
        # Idempotency keys are per API key: Bob's "k1" is not Alice's "k1".
        a = client.post("/v1/generations", json=BODY, headers={"Authorization": f"Bearer {alice}",
                                                               "Idempotency-Key": "k1"})
        b = client.post("/v1/generations", json={**BODY, "steps": 4}, headers={**as_bob, "Idempotency-Key": "k1"})
        assert a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"]
    db.dispose_engines()


def test_generation_is_rate_limited_per_key(tmp_path):
    from app.keys import create_key

    client, settings = _app(tmp_path, rate_limit=2, rate_window_seconds=3600.0)
    with client:
        with db.session_scope(settings.database_url) as s:
            _, key = create_key(s, "busy")
        assert [client.post("/v1/generations", json=BODY).status_code for _ in range(3)] == [202, 202, 429]
        limited = client.post("/v1/generations", json=BODY)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        assert limited.headers["content-type"] == "application/problem+json"
        # A key has its own budget; reading is not limited.
        auth = {"Authorization": f"Bearer {key}"}
        assert client.post("/v1/generations", json=BODY, headers=auth).status_code == 202
        assert client.get("/v1/generations").status_code == 200
    db.dispose_engines()


@pytest.mark.integration
def test_rate_limit_counters_are_shared_through_redis(redis_url):
    from app.ratelimit import RateLimiter

    namespace = f"rguide-test-{uuid.uuid4().hex[:8]}"
    one = RateLimiter(3, 60, redis_url, namespace=namespace)
    two = RateLimiter(3, 60, redis_url, namespace=namespace)  # another API process
    now = 1_000_000.0
    assert [one.hit("key:a", now)[0], two.hit("key:a", now)[0], one.hit("key:a", now)[0]] == [True] * 3
    assert two.hit("key:a", now)[0] is False
    assert one.hit("key:b", now)[0] is True
    assert one.hit("key:a", now + 60)[0] is True  # next window


def test_rate_limiter_falls_back_to_this_process_when_redis_is_down():
    from app.ratelimit import RateLimiter

    limiter = RateLimiter(1, 60, "redis://127.0.0.1:1/0", namespace="x")
    assert limiter.hit("ip:1", 0.0) == (True, 60)
    assert limiter.hit("ip:1", 1.0)[0] is False
