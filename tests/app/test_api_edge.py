"""What the edge refuses before anything reaches SQL, a worker or memory (issue 11, items 2, 3 and 7).

On real PostgreSQL, which refuses NUL bytes in text (the reason a NUL in an id
once answered 500), and with the embedded SQLite store for the rest.
"""
from __future__ import annotations

import json

import pytest

from conftest import count_jobs, sqlite_api

NUL_PATHS = ["/v1/generations/%00", "/v1/generations/ab%00cd", "/v1/images/%00.png", "/v1/surveys/%00",
             "/v1/generations?cursor=%00", "/v1/generations?cursor=abc%00", "/s/%00", "/researcher/surveys/%00"]


@pytest.fixture(scope="module")
def pg_client(service_factory):
    env = service_factory()
    with env.client() as client:
        client.env = env
        yield client


@pytest.mark.integration
@pytest.mark.parametrize("path", NUL_PATHS)
def test_a_nul_byte_in_any_id_or_cursor_is_a_4xx_on_postgresql(pg_client, path):
    r = pg_client.get(path)
    assert 400 <= r.status_code < 500, (path, r.status_code, r.text)


@pytest.mark.integration
@pytest.mark.parametrize("method, path", [("post", "/v1/generations/%00/cancel"),
                                          ("get", "/v1/generations/%00/events")])
def test_nul_ids_on_the_other_job_routes(pg_client, method, path):
    r = getattr(pg_client, method)(path)
    assert 400 <= r.status_code < 500, (path, r.status_code, r.text)


@pytest.mark.integration
def test_ids_of_the_wrong_shape_are_not_found_without_a_query(pg_client):
    for path in ("/v1/generations/" + "a" * 33, "/v1/generations/ZZZ", "/v1/images/" + "0" * 64 + ".png"):
        assert pg_client.get(path).status_code == 404, path
    r = pg_client.get("/v1/generations", params={"cursor": "W10"})  # base64 of "[]": not a cursor we issued
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "cursor"]


@pytest.fixture
def api(tmp_path):
    with sqlite_api(tmp_path, max_body_bytes=64 * 1024) as client:
        yield client


_jobs = count_jobs


def test_a_large_body_is_refused_before_it_is_read_and_the_answer_is_small(api):
    big = json.dumps({"class_labels": ["x" * 100] * 500_000, "guidance": "robust"}).encode()  # ~50 MB
    assert len(big) > 50_000_000
    r = api.post("/v1/generations", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and len(r.content) < 1000
    assert "limit of 65536 bytes" in r.json()["detail"] and _jobs(api) == 0


def test_a_streamed_body_without_a_length_stops_at_the_limit(api):
    """Driven as raw ASGI, since the test client reads a streamed body whole before sending it."""
    import asyncio

    read, sent = [], []

    async def receive():
        read.append(1)
        return {"type": "http.request", "body": b" " * 65536, "more_body": len(read) < 1000}  # 64 MB in all

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/generations", "raw_path": b"/v1/generations", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    asyncio.run(api.app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413 and len(read) <= 2 and _jobs(api) == 0


def test_an_invalid_body_is_not_echoed_back_whole(api):
    r = api.post("/v1/generations", json={"class_labels": [0], "guidance": "robust", "preset": "p" * 60_000})
    assert r.status_code == 422 and len(r.content) < 2000, len(r.content)
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", "preset"] and "characters in all" in detail["input"]


@pytest.mark.parametrize("scale", ["1", True, "1e1", "inf"])
def test_numbers_must_be_json_numbers(api, scale):
    r = api.post("/v1/generations", json={"class_labels": [0], "guidance": "robust", "preset": "tiny",
                                          "scale": scale})
    assert r.status_code == 422, r.text
    assert any(d["loc"][:2] == ["body", "scale"] for d in r.json()["detail"]) and _jobs(api) == 0


def test_seeds_and_booleans_are_strict_in_the_survey_too(api):
    from app.keys import create_key

    with api.app.state.sessions() as s:
        _, token = create_key(s, "lab")
        s.commit()
    r = api.post("/v1/surveys", headers={"Authorization": f"Bearer {token}"},
                 json={"preset": "tiny", "num_pairs": 2, "attention_checks": "yes", "seed": "7"})
    assert r.status_code == 422, r.text
    locs = {tuple(d["loc"]) for d in r.json()["detail"]}
    assert ("body", "attention_checks") in locs and ("body", "seed") in locs


def test_a_wrong_content_type_is_415_and_an_unparseable_body_400(api):
    r = api.post("/v1/generations", content=b"class_labels=1", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "text/plain" in r.json()["detail"]
    r = api.post("/v1/generations", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
    assert _jobs(api) == 0


def test_anonymous_idempotency_keys_are_scoped_per_client(api):
    from fastapi.testclient import TestClient

    body = {"preset": "tiny", "class_labels": [1], "guidance": "none", "steps": "5", "seed": 3}
    alice = TestClient(api.app, client=("203.0.113.7", 40000))
    mallory = TestClient(api.app, client=("203.0.113.99", 40001))
    first = alice.post("/v1/generations", json=body, headers={"Idempotency-Key": "guessable-1"})
    again = alice.post("/v1/generations", json=body, headers={"Idempotency-Key": "guessable-1"})
    guess = mallory.post("/v1/generations", json=body, headers={"Idempotency-Key": "guessable-1"})
    assert first.status_code == again.status_code == guess.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert guess.json()["id"] != first.json()["id"] and "Idempotent-Replayed" not in guess.headers


def test_a_bad_checkpoint_is_a_one_line_error_of_rguide_sample(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO

    junk = tmp_path / "diffusion.pt"
    junk.write_bytes(b"PK\x03\x04 this is not a torch file")
    env = {**os.environ, "RGUIDE_DEMO_DIFFUSION": str(junk)}
    r = subprocess.run([sys.executable, "-m", "rguide", "sample", "--preset", "demo", "--labels", "3",
                        "--guidance", "none", "--steps", "2", "--out", str(tmp_path / "out"), "--no-progress"],
                       cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "could not be read as a torch file" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "weights_only=False" not in r.stderr
