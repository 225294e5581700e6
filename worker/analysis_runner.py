"""Runs one analysis job: claim, run the analysis (``model_core.analysis``), store its files, complete.

Progress is written to the job row as the analysis reports it (at most every
``progress_interval_seconds``), and each write checks for a cancel request:
a canceled job stops at its next report. The files (PNGs, markdown tables)
are content-addressed in the media folder like generated images, and the
sidecar goes into the row, so a rerun of the same job writes the same files.
"""
from __future__ import annotations

import logging
import time

from worker import analysis_jobs, jobs
from worker.analysis_models import AnalysisJob
from worker.config import Settings
from worker.db import session_factory
from worker.media import relative_path, resolve, store_png
from worker.runner import _LeaseKeeper, new_owner

log = logging.getLogger("rguide.worker")

MEDIA_TYPES = {".png": "image/png", ".md": "text/markdown"}


class Canceled(Exception):
    pass


def run_analysis_job(settings: Settings, job_id: str) -> str:
    Session = session_factory(settings.database_url)
    owner = new_owner()
    with Session() as s:
        job = jobs.claim(s, job_id, owner, settings.lease_seconds, settings.max_attempts, model=AnalysisJob)
        if job is None:
            log.info("analysis %s: nothing to do", job_id)
            return "skipped"
        kind, jsettings, inputs = job.kind, dict(job.settings), list(job.inputs or [])
    keeper = _LeaseKeeper(Session, [job_id], owner, settings, AnalysisJob)
    keeper.start()
    try:
        return _run(settings, Session, job_id, kind, jsettings, inputs, owner)
    except Canceled:
        with Session() as s:
            jobs.finish_canceled(s, [job_id], owner, AnalysisJob)
        return "canceled"
    except Exception as exc:
        log.exception("analysis %s failed", job_id)
        from model_core.errors import message

        with Session() as s:
            jobs.finish_failed(s, [job_id], owner, f"{type(exc).__name__}: {message(exc)}", AnalysisJob)
        return "failed"
    finally:
        keeper.stop()


def _run(settings: Settings, Session, job_id: str, kind: str, jsettings: dict, inputs: list[dict],
         owner: str) -> str:
    from model_core.analysis import sidecar

    t0 = time.monotonic()
    progress = jobs.throttled_progress(Session, job_id, owner, AnalysisJob, settings.progress_interval_seconds, Canceled)

    paths = {ref["sha256"]: ref["path"] for ref in inputs}

    def find_upload(sha: str) -> bytes:
        return resolve(settings.media_dir, paths.get(sha, relative_path(sha))).read_bytes()

    log.info("analysis %s: %s on preset %s", job_id, kind, jsettings.get("preset"))
    progress(0, 1)
    output = sidecar.run(kind, jsettings, find_upload=find_upload if inputs else None, progress=progress)
    files = []
    for name, data in output.files.items():
        suffix = name[name.rfind("."):]
        digest, rel = store_png(settings.media_dir, data, suffix)
        files.append({"name": name, "sha256": digest, "path": rel, "size_bytes": len(data),
                      "media_type": MEDIA_TYPES.get(suffix, "application/octet-stream")})
    with Session() as s:
        done = analysis_jobs.complete(s, job_id, output.sidecar(), files)
    log.info("analysis %s: %s in %.1f s", job_id, "succeeded" if done else "not stored (canceled or finished)",
             time.monotonic() - t0)
    if not done:
        raise Canceled()
    return "succeeded"
