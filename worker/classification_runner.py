"""Runs one classification job: claim, classify the stored PNG (``model_core.robustness.classify``), complete.

Progress (network evaluations done of the total) is written to the row at
most every ``progress_interval_seconds``; each write checks for a cancel
request, so a canceled job stops at its next report.
"""
from __future__ import annotations

import logging
import time

from worker import classification_jobs, jobs
from worker.classification_models import ClassificationJob
from worker.config import Settings
from worker.db import session_factory
from worker.media import resolve
from worker.runner import _LeaseKeeper, new_owner

log = logging.getLogger("rguide.worker")


class Canceled(Exception):
    pass


def run_classification_job(settings: Settings, job_id: str) -> str:
    Session = session_factory(settings.database_url)
    owner = new_owner()
    with Session() as s:
        job = jobs.claim(s, job_id, owner, settings.lease_seconds, settings.max_attempts, model=ClassificationJob)
        if job is None:
            log.info("classification %s: nothing to do", job_id)
            return "skipped"
        method, preset, jsettings, path = job.method, job.preset, dict(job.settings), job.image_path
    keeper = _LeaseKeeper(Session, [job_id], owner, settings, ClassificationJob)
    keeper.start()
    try:
        return _run(settings, Session, job_id, method, preset, jsettings, path, owner)
    except Canceled:
        with Session() as s:
            jobs.finish_canceled(s, [job_id], owner, ClassificationJob)
        return "canceled"
    except Exception as exc:
        log.exception("classification %s failed", job_id)
        from model_core.errors import message

        with Session() as s:
            jobs.finish_failed(s, [job_id], owner, f"{type(exc).__name__}: {message(exc)}", ClassificationJob)
        return "failed"
    finally:
        keeper.stop()


def _run(settings: Settings, Session, job_id: str, method: str, preset: str, jsettings: dict, path: str,
         owner: str) -> str:
    from model_core.analysis.inputs import decode_upload
    from model_core.pipeline import get_pipeline
    from model_core.provenance import environment
    from model_core.robustness.classify import classify_pixels

    t0 = time.monotonic()
    progress = jobs.throttled_progress(Session, job_id, owner, ClassificationJob, settings.progress_interval_seconds, Canceled)

    pipe = get_pipeline(preset)
    pixels = decode_upload(resolve(settings.media_dir, path).read_bytes(), image_size=pipe.preset.image_size,
                           channels=pipe.preset.in_channels)
    progress(0, 1)
    (res,) = classify_pixels(pipe, [pixels], method, schedule=jsettings.get("schedule"),
                             seed=int(jsettings.get("seed", 0)), progress=progress)
    result = {**res, "class_names": list(pipe.preset.class_names), "seconds": round(time.monotonic() - t0, 3),
              "provenance": {"weights": dict(pipe.sources), **environment()}}
    with Session() as s:
        done = classification_jobs.complete(s, job_id, result)
    log.info("classification %s: %s in %.1f s", job_id, "succeeded" if done else "not stored",
             time.monotonic() - t0)
    if not done:
        raise Canceled()
    return "succeeded"
