"""The generation service end to end on real PostgreSQL, Redis and Celery worker processes."""
from __future__ import annotations

import io
import json
import time

import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from conftest import wait_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _count_jobs(env) -> int:
    from worker.models import Job

    with env.session() as s:
        return s.scalar(select(func.count()).select_from(Job))


def _queue_length(env) -> int:
    import redis

    return redis.Redis.from_url(env.settings.redis_url).llen(env.settings.queue)


def test_generation_succeeds_end_to_end_and_png_decodes(pg_service):
    with pg_service.client() as client:
        r = client.post("/v1/generations", json={"preset": "tiny", "class_labels": [1, "blue"], "guidance": "robust",
                                                 "steps": "10", "seed": 11})
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"] == f"/v1/generations/{job['id']}"
        assert job["status"] in ("queued", "running") and job["seeds"] == [11, 12]

        done = wait_for(client, job["id"])
        assert done["status"] == "succeeded", done
        assert done["progress"] == 1.0 and done["progress_step"] == done["progress_total"] == 10
        assert [im["label"] for im in done["images"]] == [1, 2]
        assert [im["class_name"] for im in done["images"]] == ["green", "blue"]
        for im in done["images"]:
            assert im["method"] == "robust" and im["scale"] == 1.0 and im["steps"] == "10"
            png = client.get(im["url"])
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"
            with PILImage.open(io.BytesIO(png.content)) as decoded:
                assert decoded.size == (16, 16) and decoded.mode == "RGB"
                recipe = decoded.text
            assert int(recipe["seed"]) == im["seed"] and recipe["method"] == "robust"
            # Content-addressed: the file is named by the hash of its bytes.
            path = pg_service.settings.media_dir / im["sha256"][:2] / f"{im['sha256']}.png"
            assert path.read_bytes() == png.content


def test_events_stream_progress_until_done(pg_service):
    with pg_service.client() as client:
        job = client.post("/v1/generations", json={"preset": "tiny", "class_labels": [0], "guidance": "vanilla",
                                                   "steps": "40", "seed": 3}).json()
        events = []
        with client.stream("GET", f"/v1/generations/{job['id']}/events") as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif line.startswith("data: "):
                    events.append((event, json.loads(line[len("data: "):])))
    kinds = [e for e, _ in events]
    assert kinds[-1] == "done" and events[-1][1]["status"] == "succeeded"
    progress = [d for e, d in events if e == "progress"]
    steps = [d["progress_step"] for d in progress]
    assert steps == sorted(steps) and progress[-1]["progress"] == 1.0
    assert any(0 < d["progress"] < 1 for d in progress), "no intermediate progress was streamed"


def test_events_stream_is_woken_by_the_workers_notifications(pg_service):
    """With polling pushed out to a minute, the stream can only follow the job through the worker's
    Redis notifications (worker.notify): it must still show progress and end when the job does."""
    with pg_service.client() as client:
        client.app.state.sse_poll_seconds = client.app.state.sse_safety_poll_seconds = 60.0
        job = client.post("/v1/generations", json={"preset": "tiny", "class_labels": [0], "guidance": "vanilla",
                                                   "steps": "40", "seed": 4}).json()
        start = time.monotonic()
        events = []
        with client.stream("GET", f"/v1/generations/{job['id']}/events") as resp:
            event = None
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif line.startswith("data: "):
                    events.append((event, json.loads(line[len("data: "):])))
        took = time.monotonic() - start
        assert client.app.state.job_events.watching() == 0
    assert events[-1][0] == "done" and events[-1][1]["status"] == "succeeded"
    assert took < 30, f"the stream ended after {took:.1f} s: by its 60 s poll, not by a notification"
    assert any(0 < d["progress"] < 1 for e, d in events if e == "progress"), "no notified progress was streamed"


def test_pair_images_share_seed_and_label(pg_service):
    with pg_service.client() as client:
        job = client.post("/v1/generations", json={"preset": "tiny", "class_labels": ["red", 3], "guidance": "pair",
                                                   "steps": "10", "seed": 100,
                                                   "scale": {"robust": 2.0, "vanilla": 1.0}}).json()
        done = wait_for(client, job["id"])
    assert done["status"] == "succeeded" and len(done["images"]) == 4
    by_id = {im["id"]: im for im in done["images"]}
    assert len(done["pairs"]) == 2
    for pair, label, seed in zip(done["pairs"], [0, 3], [100, 101]):
        robust, vanilla = by_id[pair["robust"]], by_id[pair["vanilla"]]
        assert robust["seed"] == vanilla["seed"] == pair["seed"] == seed
        assert robust["label"] == vanilla["label"] == pair["label"] == label
        assert (robust["method"], robust["scale"], vanilla["method"], vanilla["scale"]) == \
            ("robust", 2.0, "vanilla", 1.0)
        assert robust["pair"]["partner_id"] == vanilla["id"] and vanilla["pair"]["partner_id"] == robust["id"]
        assert robust["sha256"] != vanilla["sha256"]  # different classifiers steer differently


def test_cancel_stops_a_running_job(pg_service):
    with pg_service.client() as client:
        job = client.post("/v1/generations", json={"preset": "tiny", "class_labels": [2], "guidance": "robust",
                                                   "steps": "1000", "seed": 5}).json()
        running = wait_until(lambda: (lambda b: b if b["status"] == "running" and b["progress_step"] > 0 else None)(
            client.get(f"/v1/generations/{job['id']}").json()), timeout=60, what="the job to start sampling")
        assert running["progress_total"] == 1000
        r = client.post(f"/v1/generations/{job['id']}/cancel")
        assert r.status_code == 200 and r.json()["cancel_requested"] is True
        done = wait_for(client, job["id"], timeout=30)
        assert done["status"] == "canceled"
        assert done["progress_step"] < 1000 and done["images"] == []
        # Canceling again is harmless; the worker is free for the next job.
        assert client.post(f"/v1/generations/{job['id']}/cancel").status_code == 200
        after = client.post("/v1/generations", json={"preset": "tiny", "class_labels": [0], "guidance": "none",
                                                     "steps": "5"}).json()
        assert wait_for(client, after["id"])["status"] == "succeeded"
        r = client.post(f"/v1/generations/{after['id']}/cancel")
        assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"


def test_repeated_idempotency_key_creates_no_second_job(pg_service):
    body = {"preset": "tiny", "class_labels": [1], "guidance": "none", "steps": "5"}
    with pg_service.client() as client:
        before = _count_jobs(pg_service)
        first = client.post("/v1/generations", json=body, headers={"Idempotency-Key": "order-42"})
        second = client.post("/v1/generations", json=body, headers={"Idempotency-Key": "order-42"})
        assert first.status_code == second.status_code == 202
        assert first.json()["id"] == second.json()["id"]
        assert second.json()["seeds"] == first.json()["seeds"]  # the server-chosen seed too
        assert second.headers.get("idempotent-replayed") == "true"
        other = client.post("/v1/generations", json={**body, "class_labels": [2]},
                            headers={"Idempotency-Key": "order-42"})
        assert other.status_code == 422
        assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
        assert _count_jobs(pg_service) == before + 1
        assert wait_for(client, first.json()["id"])["status"] == "succeeded"


def test_invalid_requests_store_nothing_and_reach_no_worker(pg_service):
    with pg_service.client() as client:
        before, queued = _count_jobs(pg_service), _queue_length(pg_service)
        cases = [
            ({"preset": "tiny", "class_labels": [7], "guidance": "robust"}, ["body", "class_labels", 0]),
            ({"preset": "tiny", "class_labels": ["cat"], "guidance": "robust"}, ["body", "class_labels", 0]),
            ({"preset": "tiny", "class_labels": [0] * 17, "guidance": "robust"}, ["body", "class_labels"]),
            ({"preset": "tiny", "class_labels": [0], "guidance": "robust", "scale": -1}, ["body", "scale"]),
            ({"preset": "tiny", "class_labels": [0], "guidance": "robust", "scale": 1e6}, ["body", "scale"]),
            ({"preset": "tiny", "class_labels": [0], "guidance": "robust", "steps": "ddim0"}, ["body", "steps"]),
            ({"preset": "tiny", "class_labels": [0], "guidance": "sharpest"}, ["body", "guidance"]),
            ({"preset": "nope", "class_labels": [0], "guidance": "robust"}, ["body", "preset"]),
        ]
        for body, loc in cases:
            r = client.post("/v1/generations", json=body)
            assert r.status_code == 422, (body, r.text)
            assert loc in [e["loc"] for e in r.json()["detail"]], (body, r.json())
        assert _count_jobs(pg_service) == before
        assert _queue_length(pg_service) == queued


def test_a_job_the_broker_lost_is_picked_up_by_the_reaper(pg_service):
    from worker.reaper import reap_once

    with pg_service.client() as client:
        real_send = client.app.state.enqueuer.send
        # The broker says "accepted" and then loses the message.
        client.app.state.enqueuer.send = lambda ids: list(ids)
        job = client.post("/v1/generations", json={"preset": "tiny", "class_labels": [3], "guidance": "none",
                                                   "steps": "5"}).json()
        client.app.state.enqueuer.send = real_send
        time.sleep(1.0)  # the worker is idle and would have run a delivered job by now
        assert client.get(f"/v1/generations/{job['id']}").json()["status"] == "queued"

        result = reap_once(pg_service.settings.replace(requeue_after_seconds=0), client.app.state.enqueuer)
        assert job["id"] in result.resent
        done = wait_for(client, job["id"])
        assert done["status"] == "succeeded" and len(done["images"]) == 1 and done["attempts"] == 1


def test_worker_killed_mid_job_loses_nothing(service_factory):
    from worker import jobs
    from worker.models import Image, Job
    from worker.reaper import reap_once
    from worker.runner import run_job

    env = service_factory()
    first = env.start_worker("doomed")
    with env.client() as client:
        job = client.post("/v1/generations", json={"preset": "tiny", "class_labels": [0, 1], "guidance": "robust",
                                                   "steps": "150", "seed": 9}).json()
        wait_until(lambda: client.get(f"/v1/generations/{job['id']}").json()["progress_step"] > 0, timeout=60,
                   poll=0.02, what="the job to start sampling")
        first.kill()
        with env.session() as s:
            row = s.get(Job, job["id"])
            assert row.status == "running" and row.attempts == 1  # the DB still says a worker holds it

        env.start_worker("rescuer")
        enqueuer = client.app.state.enqueuer

        def reaped_and_done():
            reap_once(env.settings, enqueuer)  # as the API's reaper thread does every few seconds
            body = client.get(f"/v1/generations/{job['id']}").json()
            return body if body["status"] in ("succeeded", "failed", "canceled") else None

        done = wait_until(reaped_and_done, timeout=180, poll=0.5, what="the rescued job to finish")
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2 and len(done["images"]) == 2

        # A late duplicate delivery (Redis re-delivers the dead worker's unacked
        # message after its visibility timeout) runs nothing and stores nothing.
        assert run_job(env.settings, job["id"]) == "skipped"
        with env.session() as s:
            assert s.scalar(select(func.count()).select_from(Image).where(Image.job_id == job["id"])) == 2
            rows = s.scalars(select(Image).where(Image.job_id == job["id"])).all()
            # Storing the same rows again is a no-op (unique (job, position, method)).
            jobs.store_images(s, [{c.name: getattr(r, c.name) for c in Image.__table__.columns} for r in rows])
            s.commit()
            assert s.scalar(select(func.count()).select_from(Image).where(Image.job_id == job["id"])) == 2
        files = [p for p in env.settings.media_dir.rglob("*.png")]
        assert sorted(p.stem for p in files) == sorted(im["sha256"] for im in done["images"])
