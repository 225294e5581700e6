"""The robustness-report jobs' store: create (idempotent), read, list, complete (torch-free, Celery-free)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.db import utcnow
from worker.ids import is_row_id, new_id
from worker.jobs import IdempotencyConflict
from worker.robustness_models import RobustnessJob


def _find(session: Session, owner_key_id: str, idempotency_key: str) -> RobustnessJob | None:
    return session.scalar(select(RobustnessJob).where(RobustnessJob.owner_key_id == owner_key_id,
                                                      RobustnessJob.idempotency_key == idempotency_key))


def create(session: Session, *, preset: str, settings: dict[str, Any], progress_total: int, owner_key_id: str,
           idempotency_key: str | None = None, request_hash: str | None = None) -> tuple[RobustnessJob, bool]:
    """Insert a queued report job, or return the one an identical earlier request made. Commits.

    Returns (job, created). The same Idempotency-Key with a different request
    hash raises ``worker.jobs.IdempotencyConflict``.
    """
    if idempotency_key is not None:
        existing = _find(session, owner_key_id, idempotency_key)
        if existing is not None:
            if existing.request_hash != request_hash:
                raise IdempotencyConflict(existing.id)
            return existing, False
    job = RobustnessJob(id=new_id(), status="queued", preset=preset, settings=settings, progress_step=0,
                        progress_total=progress_total, cancel_requested=False, attempts=0,
                        owner_key_id=owner_key_id, idempotency_key=idempotency_key, request_hash=request_hash)
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        # Two requests with the same key raced; the unique constraint let one in.
        session.rollback()
        existing = _find(session, owner_key_id, idempotency_key) if idempotency_key is not None else None
        if existing is None:
            raise
        if existing.request_hash != request_hash:
            raise IdempotencyConflict(existing.id) from None
        return existing, False
    return job, True


def get(session: Session, job_id: str) -> RobustnessJob | None:
    return session.get(RobustnessJob, job_id) if is_row_id(job_id) else None


def list_for(session: Session, owner_key_id: str | None, limit: int = 100) -> list[RobustnessJob]:
    stmt = select(RobustnessJob).order_by(RobustnessJob.created_at.desc(), RobustnessJob.id.desc()).limit(limit)
    if owner_key_id is not None:
        stmt = stmt.where(RobustnessJob.owner_key_id == owner_key_id)
    return list(session.scalars(stmt))


def complete(session: Session, job_id: str, owner: str, result: dict[str, Any], markdown: str) -> bool:
    """Store the report and mark the job succeeded, unless it was canceled or taken over meanwhile."""
    res = session.execute(update(RobustnessJob).where(
        RobustnessJob.id == job_id, RobustnessJob.status == "running", RobustnessJob.lease_owner == owner,
        RobustnessJob.cancel_requested.is_(False)).values(
        status="succeeded", result=result, markdown=markdown, finished_at=utcnow(), lease_owner=None,
        lease_expires_at=None, progress_step=RobustnessJob.progress_total, error=None))
    session.commit()
    return res.rowcount == 1
