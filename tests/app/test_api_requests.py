"""The REST API in-process on SQLite and the filesystem broker, without workers."""
from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from conftest import REPO, count_jobs, make_settings, sqlite_api
from worker import db


@pytest.fixture
def api(tmp_path):
    with sqlite_api(tmp_path) as client:
        yield client


_jobs = count_jobs


def _broker_messages(client) -> int:
    return len(list(client.settings.broker_folders()["queue"].glob("*.msg")))


def test_presets_list_classes_methods_and_limits(api):
    body = api.get("/v1/presets").json()
    tiny = {p["name"]: p for p in body["presets"]}["tiny"]
    assert tiny["classes"][2] == {"index": 2, "name": "blue"}
    assert set(tiny["guidance_methods"]) >= {"none", "vanilla", "robust", "pair"}
    assert tiny["default_scales"] == {"vanilla": 0.5, "robust": 1.0} and tiny["available"] is True
    assert body["limits"]["max_images_per_request"] == 16


def test_presets_list_the_diffusion_method_its_cost_and_where_it_is_unavailable(api):
    presets = {p["name"]: p for p in api.get("/v1/presets").json()["presets"]}
    demo, uncond = presets["demo"], presets["demo-uncond"]
    assert "diffusion" in demo["guidance_methods"] and demo["default_scales"]["diffusion"] == 1.0
    assert demo["guidance_cost"] == {"vanilla": {"unet": 0, "classifier": 1}, "robust": {"unet": 0, "classifier": 1},
                                     "diffusion": {"unet": 30, "classifier": 0}}
    assert "diffusion" not in uncond["guidance_methods"] and "class_cond" in uncond["unavailable_methods"]["diffusion"]
    r = api.post("/v1/generations", json={"preset": "demo", "class_labels": [3], "guidance": "diffusion",
                                          "steps": "10", "seed": 1})
    assert r.status_code == 202, r.text
    assert r.json()["scale"] == {"diffusion": 1.0}


def test_a_valid_request_is_stored_queued_and_sent(api):
    r = api.post("/v1/generations", json={"preset": "tiny", "class_labels": ["GREY", "1"], "guidance": "vanilla",
                                          "steps": "ddim5", "seed": 40})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["class_labels"] == [3, 1] and job["class_names"] == ["grey", "green"]
    assert job["sampler"] == "ddim" and job["steps"] == "ddim5" and job["progress_total"] == 5
    assert job["scale"] == {"vanilla": 0.5} and job["seeds"] == [40, 41] and job["num_images"] == 2
    assert job["status"] == "queued" and job["progress"] == 0 and job["images"] == []
    assert api.get(r.headers["location"]).json()["id"] == job["id"]
    assert _jobs(api) == 1 and _broker_messages(api) == 1


def test_scale_forms(api):
    def scale(body):
        r = api.post("/v1/generations", json={"preset": "tiny", "class_labels": [0], "steps": 5, **body})
        assert r.status_code == 202, r.text
        return r.json()["scale"]

    assert scale({"guidance": "pair", "scale": 3}) == {"robust": 3.0, "vanilla": 3.0}
    assert scale({"guidance": "pair", "scale": {"vanilla": 2}}) == {"robust": 1.0, "vanilla": 2.0}
    assert scale({"guidance": "robust"}) == {"robust": 1.0}
    assert scale({"guidance": "none"}) == {}


@pytest.mark.parametrize("body, loc, words", [
    ({"class_labels": [4], "guidance": "robust"}, ["body", "class_labels", 0], "out of range"),
    ({"class_labels": [0, "purple"], "guidance": "robust"}, ["body", "class_labels", 1], "not a class"),
    ({"class_labels": [], "guidance": "robust"}, ["body", "class_labels"], "at least 1"),
    ({"class_labels": [0] * 9, "guidance": "pair"}, ["body", "class_labels"], "at most 16"),
    ({"class_labels": [0], "guidance": "robust", "scale": 0}, ["body", "scale"], "positive"),
    ({"class_labels": [0], "guidance": "robust", "scale": 101}, ["body", "scale"], "cap"),
    ({"class_labels": [0], "guidance": "pair", "scale": {"robust": -2}}, ["body", "scale", "robust"], "positive"),
    ({"class_labels": [0], "guidance": "robust", "scale": {"vanilla": 1}}, ["body", "scale", "vanilla"], "does not"),
    ({"class_labels": [0], "guidance": "none", "scale": 1}, ["body", "scale"], "takes no scale"),
    ({"class_labels": [0], "guidance": "robust", "steps": "fast"}, ["body", "steps"], "not a step count"),
    ({"class_labels": [0], "guidance": "robust", "steps": 0}, ["body", "steps"], "at least 1"),
    ({"class_labels": [0], "guidance": "robust", "steps": "ddim7", "sampler": "ddpm"}, ["body", "steps"], "DDIM"),
    ({"class_labels": [0], "guidance": "robust", "sampler": "euler"}, ["body", "sampler"], "ddpm"),
    ({"class_labels": [0], "guidance": "magic"}, ["body", "guidance"], "not one of"),
    ({"class_labels": [0], "guidance": "diffusion"}, ["body", "guidance"], "not one of"),  # tiny has none
    ({"class_labels": [0], "guidance": "diffusion", "preset": "demo-uncond"}, ["body", "guidance"],
     "diffusion.model.class_cond is false"),
    ({"class_labels": [0], "guidance": "robust", "seed": -3}, ["body", "seed"], "seed"),
    ({"class_labels": [0, 1], "guidance": "robust", "seed": 2**63 - 1}, ["body", "seed"], "63 bits"),
    ({"class_labels": [0], "guidance": "robust", "preset": "imagenet128"}, ["body", "preset"], "weights"),
    ({"class_labels": [0], "guidance": "robust", "preset": "nope"}, ["body", "preset"], "unknown"),
    ({"class_labels": [0], "guidance": "robust", "colour": "red"}, ["body", "colour"], "Extra inputs"),
    ({"class_labels": [0.5], "guidance": "robust"}, ["body", "class_labels", 0], ""),
    ({"guidance": "robust"}, ["body", "class_labels"], "Field required"),
])
def test_invalid_requests_name_the_field_and_store_nothing(api, body, loc, words):
    r = api.post("/v1/generations", json={"preset": "tiny", **body})
    assert r.status_code == 422, r.text
    problems = r.json()["detail"]
    matching = [p for p in problems if p["loc"][:len(loc)] == loc]
    assert matching, problems
    assert any(words.lower() in p["msg"].lower() for p in matching), problems
    assert _jobs(api) == 0 and _broker_messages(api) == 0


def test_all_problems_are_reported_at_once(api):
    r = api.post("/v1/generations", json={"preset": "tiny", "class_labels": [9, "cat"], "guidance": "robust",
                                          "scale": -1, "steps": "ddim0"})
    assert [p["loc"] for p in r.json()["detail"]] == [
        ["body", "class_labels", 0], ["body", "class_labels", 1], ["body", "scale"], ["body", "steps"]]


def test_non_finite_numbers_are_a_422_not_a_crash(api):
    r = api.post("/v1/generations", content=b'{"class_labels": [0], "guidance": "robust", "scale": NaN}',
                 headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "scale"]


def test_errors_other_than_validation_are_problem_json(api):
    for path in ("/v1/generations/unknown", "/v1/images/0123.png", "/v1/nothing-here"):
        r = api.get(path)
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 404 and r.json()["title"] == "Not Found"
    r = api.post("/v1/generations/unknown/cancel")
    assert r.status_code == 404 and "unknown" in r.json()["detail"]


def test_list_is_cursor_paginated_newest_first(api):
    ids = [api.post("/v1/generations", json={"preset": "tiny", "class_labels": [i % 4], "guidance": "none",
                                             "steps": 3}).json()["id"] for i in range(5)]
    page1 = api.get("/v1/generations", params={"limit": 2}).json()
    page2 = api.get("/v1/generations", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    page3 = api.get("/v1/generations", params={"limit": 2, "cursor": page2["next_cursor"]}).json()
    got = [j["id"] for p in (page1, page2, page3) for j in p["items"]]
    assert got == ids[::-1] and page3["next_cursor"] is None
    assert api.get("/v1/generations", params={"status": "succeeded"}).json()["items"] == []
    bad = api.get("/v1/generations", params={"cursor": "xyz"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_a_job_submitted_while_the_broker_is_down_is_kept_and_sent_later(tmp_path):
    from app.main import create_app
    from worker.celery_app import Enqueuer
    from worker.models import Job
    from worker.reaper import reap_once

    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'down.db'}",
                             broker_url="redis://127.0.0.1:1/0", redis_url=None)  # nothing listens on port 1
    with TestClient(create_app(settings, run_reaper=False)) as client:
        r = client.post("/v1/generations", json={"preset": "tiny", "class_labels": [0], "guidance": "none"})
        assert r.status_code == 202 and r.json()["status"] == "queued"
        with client.app.state.sessions() as s:
            assert s.get(Job, r.json()["id"]).enqueued_at is None
    # The broker is back (here: the filesystem broker) and the API's reaper runs.
    back = settings.replace(broker_url="filesystem://localhost/")
    back.ensure_dirs()
    result = reap_once(back, Enqueuer(back))
    assert result.resent == [r.json()["id"]]
    assert len(list(back.broker_folders()["queue"].glob("*.msg"))) == 1
    db.dispose_engines()


def test_readiness_needs_a_live_worker(api):
    from worker.presence import remove_worker, touch_worker

    assert api.get("/healthz").json() == {"status": "ok"}
    r = api.get("/readyz")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["database"]["ok"] and checks["broker"]["ok"] and not checks["workers"]["ok"]
    touch_worker(api.settings, "test-worker", {})  # what a worker's heartbeat thread writes
    assert api.get("/readyz").status_code == 200
    remove_worker(api.settings, "test-worker")
    assert api.get("/readyz").status_code == 503


def test_openapi_documents_the_api(api):
    spec = api.get("/openapi.json").json()
    assert {"/v1/presets", "/v1/generations", "/v1/generations/{job_id}", "/v1/generations/{job_id}/events",
            "/v1/generations/{job_id}/cancel", "/v1/images/{image_id}.png", "/healthz", "/readyz"} <= set(spec["paths"])
    post = spec["paths"]["/v1/generations"]["post"]
    assert "202" in post["responses"] and "422" in post["responses"]
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])


def test_the_api_never_imports_torch():
    code = """
import sys, tempfile
from pathlib import Path
from fastapi.testclient import TestClient
from worker.config import Settings
from app.main import create_app
tmp = Path(tempfile.mkdtemp())
s = Settings.from_env({}, data_dir=tmp, reaper_interval_seconds=0)
with TestClient(create_app(s)) as c:
    assert c.get('/v1/presets').status_code == 200
    body = {'preset': 'tiny', 'class_labels': [1], 'guidance': 'pair'}
    assert c.post('/v1/generations', json=body).status_code == 202
    assert c.post('/v1/generations', json={**body, 'class_labels': [9]}).status_code == 422
print('torch' in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
