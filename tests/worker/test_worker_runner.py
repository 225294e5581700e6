"""The task body in-process (no broker): batching, idempotent re-runs, failures, cancel."""
from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from conftest import make_settings, wait_until
from worker import db, jobs
from worker.models import Image, Job
from worker.runner import run_job

pytestmark = pytest.mark.slow  # runs the tiny model in-process


@pytest.fixture
def settings(tmp_path):
    s = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'runner.db'}")
    s.ensure_dirs()
    db.upgrade(s.database_url)
    yield s
    db.dispose_engines()


def _create(settings, spec) -> str:
    with db.session_factory(settings.database_url)() as s:
        return jobs.create_job(s, spec)[0].id


def _job(settings, job_id) -> Job:
    with db.session_factory(settings.database_url)() as s:
        return jobs.get_job(s, job_id)


def robust(label, seed, steps="8"):
    return jobs.JobSpec("tiny", "robust", (label,), (seed,), {"robust": 1.0}, steps, "ddpm", int(steps))


def test_waiting_lookalikes_are_sampled_in_one_batch_with_identical_results(settings):
    alone = _create(settings, robust(1, 5))
    assert run_job(settings, alone) == "succeeded"

    twin = _create(settings, robust(1, 5))
    pair = _create(settings, jobs.JobSpec("tiny", "pair", (2, 3), (7, 8), {"robust": 1.0, "vanilla": 0.5},
                                          "8", "ddpm", 8))
    plain = _create(settings, jobs.JobSpec("tiny", "none", (0,), (9,), {}, "8", "ddpm", 8))
    slower = _create(settings, robust(1, 5, steps="9"))  # other timesteps: cannot share the loop
    assert run_job(settings, twin) == "succeeded"

    for job_id in (twin, pair, plain):
        job = _job(settings, job_id)
        assert job.status == "succeeded" and job.attempts == 1 and len(job.images) == job.num_images
    assert _job(settings, slower).status == "queued"
    # Per-sample seeds: an image does not depend on its batch mates.
    assert _job(settings, twin).images[0].sha256 == _job(settings, alone).images[0].sha256
    # The delivery of a job already run in someone else's batch does nothing.
    assert run_job(settings, pair) == "skipped"


def test_a_burst_still_arriving_joins_the_batch_and_a_lone_job_never_waits(settings, monkeypatch):
    import worker.runner as runner

    waits, late = [], []

    def sleep(seconds):  # the rest of the burst reaches the database while the worker gathers
        waits.append(seconds)
        late.extend(_create(settings, robust(0, 20 + i)) for i in range(3))

    monkeypatch.setattr(runner.time, "sleep", sleep)
    lone = _create(settings, robust(1, 1))
    assert run_job(settings, lone) == "succeeded" and waits == []  # no companions: no burst, no wait

    first, second = _create(settings, robust(2, 2)), _create(settings, robust(3, 3))
    assert run_job(settings, first) == "succeeded"
    assert waits == [settings.batch_gather_seconds] and len(late) == 3
    for job_id in (first, second, *late):  # one batch: every job of the burst ran in this one call
        job = _job(settings, job_id)
        assert job.status == "succeeded" and job.attempts == 1, job_id

    off = dataclasses.replace(settings, batch_gather_seconds=0)  # off: late arrivals wait for their own messages
    waits.clear()
    first, second = _create(off, robust(2, 4)), _create(off, robust(3, 5))
    assert run_job(off, first) == "succeeded" and waits == [] and _job(off, second).status == "succeeded"


def test_a_task_that_runs_twice_stores_each_image_once(settings):
    job_id = _create(settings, jobs.JobSpec("tiny", "pair", (0,), (3,), {"robust": 1.0, "vanilla": 0.5},
                                            "6", "ddpm", 6))
    assert run_job(settings, job_id) == "succeeded"
    first = {(im.position, im.method): (im.id, im.sha256) for im in _job(settings, job_id).images}
    # Simulate the crash window: images written, then the worker died before anyone saw "succeeded".
    Session = db.session_factory(settings.database_url)
    with Session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(
            status="running", lease_owner="dead", lease_expires_at=db.utcnow() - timedelta(seconds=1)))
        s.commit()
    assert run_job(settings, job_id) == "succeeded"
    job = _job(settings, job_id)
    assert job.attempts == 2
    assert {(im.position, im.method): (im.id, im.sha256) for im in job.images} == first
    with Session() as s:
        assert s.scalar(select(func.count()).select_from(Image)) == 2
    assert len(list(settings.media_dir.rglob("*.png"))) == 2


def test_a_job_that_cannot_run_fails_with_the_reason(settings):
    # Validation refuses this at the API; a job row written by other means still fails cleanly.
    job_id = _create(settings, jobs.JobSpec("imagenet128", "robust", (1,), (1,), {"robust": 1.0}, "10", "ddpm", 10))
    assert run_job(settings, job_id) == "failed"
    job = _job(settings, job_id)
    assert job.status == "failed" and "weights not found" in job.error and job.lease_owner is None


def test_cancel_stops_sampling_at_the_next_step(settings):
    job_id = _create(settings, robust(0, 1, steps="1000"))
    outcome = []
    t = threading.Thread(target=lambda: outcome.append(run_job(settings, job_id)))
    t.start()
    wait_until(lambda: _job(settings, job_id).progress_step > 0, timeout=60, what="sampling to start")
    with db.session_factory(settings.database_url)() as s:
        jobs.request_cancel(s, job_id)
    t.join(timeout=60)
    assert outcome == ["canceled"]
    job = _job(settings, job_id)
    assert job.status == "canceled" and job.progress_step < 1000 and job.images == []


def test_progress_is_written_while_sampling(settings):
    job_id = _create(settings, robust(0, 1, steps="60"))
    seen = set()
    t = threading.Thread(target=run_job, args=(settings, job_id))
    t.start()
    while t.is_alive():
        seen.add(_job(settings, job_id).progress_step)
        time.sleep(0.02)
    t.join()
    assert _job(settings, job_id).status == "succeeded"
    assert any(0 < step < 60 for step in seen), seen


def test_canceling_one_job_of_a_batch_leaves_its_batch_mates_alone(settings):
    keep = _create(settings, robust(0, 1, steps="100"))
    drop = _create(settings, robust(1, 2, steps="100"))
    t = threading.Thread(target=run_job, args=(settings, keep))
    t.start()
    wait_until(lambda: _job(settings, drop).progress_step > 0, timeout=60, what="the batch to start")
    with db.session_factory(settings.database_url)() as s:
        jobs.request_cancel(s, drop)
    # Shown as canceled while its batch mate is still sampling.
    wait_until(lambda: _job(settings, drop).status == "canceled", timeout=30, what="the cancel to take effect")
    assert _job(settings, keep).status == "running"
    t.join(timeout=600)
    assert not t.is_alive()
    kept, dropped = _job(settings, keep), _job(settings, drop)
    assert kept.status == "succeeded" and len(kept.images) == 1
    assert dropped.status == "canceled" and dropped.images == [] and dropped.progress_step < 100
