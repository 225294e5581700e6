"""The classification jobs' store: create, read, list, complete (torch-free, Celery-free)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from worker.classification_models import ClassificationJob
from worker.db import utcnow
from worker.ids import is_row_id, new_id


def create(session: Session, *, method: str, preset: str, settings: dict[str, Any], image_sha256: str,
           image_path: str, owner_key_id: str) -> ClassificationJob:
    """Insert a queued classification job. Commits."""
    job = ClassificationJob(id=new_id(), status="queued", method=method, preset=preset, settings=settings,
                            image_sha256=image_sha256, image_path=image_path, progress_step=0, progress_total=0,
                            cancel_requested=False, attempts=0, owner_key_id=owner_key_id)
    session.add(job)
    session.commit()
    return job


def get(session: Session, job_id: str) -> ClassificationJob | None:
    return session.get(ClassificationJob, job_id) if is_row_id(job_id) else None


def list_for(session: Session, owner_key_id: str | None, limit: int = 100) -> list[ClassificationJob]:
    stmt = select(ClassificationJob).order_by(ClassificationJob.created_at.desc(),
                                              ClassificationJob.id.desc()).limit(limit)
    if owner_key_id is not None:
        stmt = stmt.where(ClassificationJob.owner_key_id == owner_key_id)
    return list(session.scalars(stmt))


def complete(session: Session, job_id: str, result: dict[str, Any]) -> bool:
    """Store the probabilities and mark the job succeeded, unless it was canceled meanwhile."""
    res = session.execute(update(ClassificationJob).where(
        ClassificationJob.id == job_id, ClassificationJob.status == "running",
        ClassificationJob.cancel_requested.is_(False)).values(
        status="succeeded", result=result, finished_at=utcnow(), lease_owner=None, lease_expires_at=None,
        progress_step=ClassificationJob.progress_total, error=None))
    session.commit()
    return res.rowcount == 1
