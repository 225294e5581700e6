"""The analysis jobs' store: create, read, list, complete (torch-free, Celery-free).

Claiming, leases, progress, cancelling, failing and reaping are
``worker.jobs``'s guarded updates with ``model=AnalysisJob``; what is here is
what only an analysis has: its settings, uploaded inputs, sidecar and files.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from worker.analysis_models import AnalysisJob
from worker.db import utcnow
from worker.ids import is_row_id, new_id


def create(session: Session, *, kind: str, preset: str, settings: dict[str, Any], inputs: list[dict[str, Any]],
           num_images: int, owner_key_id: str) -> AnalysisJob:
    """Insert a queued analysis job. Commits."""
    job = AnalysisJob(id=new_id(), status="queued", kind=kind, preset=preset, settings=settings, inputs=inputs,
                      num_images=num_images, progress_step=0, progress_total=0, cancel_requested=False, attempts=0,
                      owner_key_id=owner_key_id)
    session.add(job)
    session.commit()
    return job


def get(session: Session, job_id: str) -> AnalysisJob | None:
    return session.get(AnalysisJob, job_id) if is_row_id(job_id) else None


def list_for(session: Session, owner_key_id: str | None, limit: int = 100) -> list[AnalysisJob]:
    """Newest first; ``owner_key_id`` None lists every key's (an admin key)."""
    stmt = select(AnalysisJob).order_by(AnalysisJob.created_at.desc(), AnalysisJob.id.desc()).limit(limit)
    if owner_key_id is not None:
        stmt = stmt.where(AnalysisJob.owner_key_id == owner_key_id)
    return list(session.scalars(stmt))


def complete(session: Session, job_id: str, result: dict[str, Any], files: list[dict[str, Any]]) -> bool:
    """Store the sidecar and the files' media paths and mark the job succeeded, unless it was canceled meanwhile."""
    res = session.execute(update(AnalysisJob).where(
        AnalysisJob.id == job_id, AnalysisJob.status == "running", AnalysisJob.cancel_requested.is_(False)).values(
        status="succeeded", result=result, files=files, finished_at=utcnow(), lease_owner=None,
        lease_expires_at=None, progress_step=AnalysisJob.progress_total, error=None))
    session.commit()
    return res.rowcount == 1
