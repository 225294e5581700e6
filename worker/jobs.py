"""The job store: every state change of a generation job, as guarded SQL updates.

Each transition is one UPDATE whose WHERE clause states the state it expects
("queued", "running under my lease", ...). Two processes racing for the same
job therefore cannot both win, on SQLite or PostgreSQL, without any lock held
across a network call. Torch-free and Celery-free: the API, the workers and
the reaper all use these functions.

Lifecycle::

    queued --claim--> running --finish--> succeeded | failed | canceled
       |                 |  lease expired (worker lost): reaper -> queued (or failed after max attempts)
       +--cancel-------> canceled
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from model_core.presets import get_preset
from model_core.files import sha256_text
from worker.db import utcnow
from worker.ids import is_row_id, new_id
from worker.models import TERMINAL_STATUSES, Image, Job, Preview

log = logging.getLogger("rguide.jobs")


class IdempotencyConflict(Exception):
    """The Idempotency-Key was already used with a different request body."""

    def __init__(self, job_id: str):
        super().__init__(f"this Idempotency-Key was already used for job {job_id} with a different request body")
        self.job_id = job_id


class JobStateError(Exception):
    """A transition the job's current status does not allow (e.g. cancelling a finished job)."""


@dataclass(frozen=True)
class JobSpec:
    """A validated request, everything resolved: what a worker needs to sample it."""
    preset: str
    guidance: str
    labels: tuple[int, ...]
    seeds: tuple[int, ...]
    scales: dict[str, float]
    steps: str
    sampler: str
    num_steps: int
    previews: int = 0  # predicted-x_0 pictures to keep per image along its trajectory

    @property
    def methods(self) -> list[str]:
        return list(get_preset(self.preset).methods_for(self.guidance))

    @property
    def num_images(self) -> int:
        return len(self.labels) * len(self.methods)

    @property
    def batch_key(self) -> str:
        # Jobs may share a batch when the sampler loop is identical: same
        # models, same timesteps, same sampler. Labels, seeds, methods and
        # scales are per trajectory, and each image depends only on its own.
        return hashlib.sha256(f"{self.preset}|{self.steps}|{self.sampler}".encode()).hexdigest()[:32]

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps({
            "preset": self.preset, "guidance": self.guidance, "labels": list(self.labels),
            "seeds": list(self.seeds), "scales": self.scales, "steps": self.steps, "sampler": self.sampler,
            **({"previews": self.previews} if self.previews else {}),
        }, sort_keys=True).encode()).hexdigest()


def new_job_id() -> str:
    return new_id()


def image_id(job_id: str, position: int, method: str) -> str:
    """Deterministic, so that a task that runs twice writes the same rows."""
    return hashlib.sha256(f"{job_id}/{position}/{method}".encode()).hexdigest()[:32]


def preview_id(job_id: str, position: int, method: str, frame: int) -> str:
    return hashlib.sha256(f"{job_id}/{position}/{method}/preview/{frame}".encode()).hexdigest()[:32]


# -- creating -------------------------------------------------------------------

def find_idempotent(session: Session, scope: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.idempotency_scope == scope, Job.idempotency_key == key))


def create_job(session: Session, spec: JobSpec, *, owner_key_id: str | None = None,
               idempotency_key: str | None = None, request_hash: str | None = None,
               anonymous_scope: str | None = None) -> tuple[Job, bool]:
    """Insert a queued job, or return the job an identical earlier request created.

    Returns (job, created). With an Idempotency-Key, a repeat with the same
    request hash returns the first job; a different hash raises
    ``IdempotencyConflict``. Keys are scoped per API key, and for requests
    without one per ``anonymous_scope`` (the API passes a digest of the
    client's address), so one client cannot fetch another's job by guessing
    its Idempotency-Key. Commits.
    """
    scope = owner_key_id or ("anon:" + sha256_text(anonymous_scope)[:32] if anonymous_scope else "anonymous")
    if idempotency_key is not None:
        existing = find_idempotent(session, scope, idempotency_key)
        if existing is not None:
            if existing.request_hash != request_hash:
                raise IdempotencyConflict(existing.id)
            return existing, False
    job = Job(id=new_job_id(), status="queued", preset=spec.preset, guidance=spec.guidance,
              labels=list(spec.labels), seeds=list(spec.seeds), scales=dict(spec.scales), steps=spec.steps,
              sampler=spec.sampler, num_steps=spec.num_steps, num_images=spec.num_images,
              batch_key=spec.batch_key, progress_step=0, progress_total=spec.num_steps, cancel_requested=False,
              attempts=0, owner_key_id=owner_key_id, **({"previews": spec.previews} if spec.previews else {}),
              idempotency_scope=scope if idempotency_key is not None else None,
              idempotency_key=idempotency_key, request_hash=request_hash)
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        # Two requests with the same key raced; the unique constraint let one in.
        session.rollback()
        if idempotency_key is None:
            raise
        existing = find_idempotent(session, scope, idempotency_key)
        if existing is None:
            raise
        if existing.request_hash != request_hash:
            raise IdempotencyConflict(existing.id) from None
        return existing, False
    return job, True


def mark_enqueued(session: Session, job_ids: list[str], when: datetime | None = None, model: type = Job) -> None:
    if job_ids:
        session.execute(update(model).where(model.id.in_(job_ids)).values(enqueued_at=when or utcnow()))
        session.commit()


# -- reading --------------------------------------------------------------------

def get_job(session: Session, job_id: str, with_images: bool = True) -> Job | None:
    if not is_row_id(job_id):
        return None
    stmt = select(Job).where(Job.id == job_id)
    if with_images:
        stmt = stmt.options(selectinload(Job.images), selectinload(Job.preview_images))
    return session.scalar(stmt)


def encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError for anything that is not a cursor this API issued."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None or not is_row_id(job_id):
            raise ValueError
        return when, job_id
    except Exception:
        raise ValueError("cursor is not a value returned as next_cursor by this API") from None


def list_jobs(session: Session, *, limit: int, cursor: str | None = None, status: str | None = None,
              owner_key_id: str | None = None, only_owner: bool = False,
              all_study_jobs: bool = False) -> tuple[list[Job], str | None]:
    """Newest first; keyset pagination on (created_at, id) so pages never skip or repeat rows.

    A survey study's jobs are left out unless they belong to ``owner_key_id`` (or
    ``all_study_jobs``): their images must reach raters only through the survey.
    """
    stmt = select(Job).options(selectinload(Job.images), selectinload(Job.preview_images)).order_by(
        Job.created_at.desc(), Job.id.desc())
    if cursor:
        when, last_id = decode_cursor(cursor)
        stmt = stmt.where(or_(Job.created_at < when, and_(Job.created_at == when, Job.id < last_id)))
    if status:
        stmt = stmt.where(Job.status == status)
    if only_owner:
        stmt = stmt.where(Job.owner_key_id == owner_key_id)
    if not all_study_jobs:
        public = Job.study_id.is_(None)
        stmt = stmt.where(public if owner_key_id is None else or_(public, Job.owner_key_id == owner_key_id))
    rows = list(session.scalars(stmt.limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


# -- cancelling -----------------------------------------------------------------

def request_cancel(session: Session, job_id: str, model: type = Job):
    """Cancel a queued job at once; ask a running job's worker to stop at its next step.

    Raises ``JobStateError`` for a job that already succeeded or failed;
    cancelling a canceled job is a no-op. Commits.
    """
    now = utcnow()
    res = session.execute(update(model).where(model.id == job_id, model.status == "queued").values(
        status="canceled", cancel_requested=True, finished_at=now, lease_owner=None, lease_expires_at=None))
    if res.rowcount == 0:
        session.execute(update(model).where(model.id == job_id, model.status == "running")
                        .values(cancel_requested=True))
    session.commit()
    job = get_job(session, job_id) if model is Job else session.get(model, job_id)
    if job is None:
        raise LookupError(job_id)
    session.refresh(job)
    if job.status in ("succeeded", "failed"):
        raise JobStateError(f"job {job_id} already {job.status}; there is nothing to cancel")
    return job


# -- working (called by workers) ---------------------------------------------------

def claim(session: Session, job_id: str, owner: str, lease_seconds: float, max_attempts: int,
          model: type = Job):
    """Take a queued job (or a running one whose worker's lease expired). Commits.

    Returns None when the job is not ours to run: finished, canceled, or held
    by a live worker. That is what makes a duplicate delivery harmless.
    """
    now = utcnow()
    takeable = or_(model.status == "queued", and_(model.status == "running", model.lease_expires_at < now))
    res = session.execute(update(model).where(model.id == job_id, takeable, model.cancel_requested.is_(False),
                                            model.attempts < max_attempts).values(
        status="running", lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds),
        attempts=model.attempts + 1, started_at=func.coalesce(model.started_at, now), progress_step=0, error=None))
    session.commit()
    if res.rowcount != 1:
        # A job that keeps killing its workers ends here instead of looping.
        res = session.execute(update(model).where(model.id == job_id, takeable, model.attempts >= max_attempts).values(
            status="failed", finished_at=now, lease_owner=None, lease_expires_at=None,
            error=f"gave up after {max_attempts} attempts: the worker running it was lost each time"))
        session.commit()
        return None
    return get_job(session, job_id, with_images=False) if model is Job else session.get(model, job_id)


def claim_companions(session: Session, leader: Job, owner: str, lease_seconds: float,
                     max_images: int) -> list[Job]:
    """Claim other queued jobs that can share the leader's sampling batch. Commits.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` so concurrent workers split the
    waiting jobs between them instead of queueing on each other's row locks.
    SQLite (one writer at a time): the guarded UPDATE per job is the lock.
    """
    room = max_images - leader.num_images
    if room <= 0:
        return []
    stmt = (select(Job.id, Job.num_images)
            .where(Job.status == "queued", Job.batch_key == leader.batch_key, Job.id != leader.id,
                   Job.cancel_requested.is_(False))
            .order_by(Job.created_at, Job.id).limit(max(1, room)))
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    candidates = session.execute(stmt).all()
    now = utcnow()
    chosen: list[str] = []
    for job_id, n in candidates:
        if n > room:
            continue
        res = session.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(
            status="running", lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, now), progress_step=0))
        if res.rowcount == 1:
            chosen.append(job_id)
            room -= n
    session.commit()
    if not chosen:
        return []
    jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(chosen)))}
    return [jobs[i] for i in chosen]


def renew_lease(session: Session, job_ids: list[str], owner: str, lease_seconds: float,
                model: type = Job) -> int:
    res = session.execute(update(model).where(model.id.in_(job_ids), model.lease_owner == owner,
                                            model.status == "running").values(
        lease_expires_at=utcnow() + timedelta(seconds=lease_seconds)))
    session.commit()
    return res.rowcount


def throttled_progress(Session, job_id: str, owner: str, model: type, interval: float, canceled: type[Exception]):
    """A ``progress(done, total)`` callback for one running job: writes at most every ``interval`` seconds
    (and always the last step) and raises ``canceled`` once a cancel was requested."""
    import time

    state = {"last": float("-inf")}

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - state["last"] < interval:
            return
        state["last"] = now
        with Session() as s:
            if record_progress(s, [job_id], owner, int(done), int(total), model):
                raise canceled()

    return progress


def record_progress(session: Session, job_ids: list[str], owner: str, step: int, total: int,
                    model: type = Job) -> set[str]:
    """Write step/total for our running jobs; return the ids whose cancel was requested. Commits.

    The cancel flags come back with the update (RETURNING, one round trip: this runs every
    ``progress_interval_seconds`` while sampling); only jobs that are no longer ours to update
    (lease taken over, finished by the reaper) are looked up separately.
    """
    rows = session.execute(update(model).where(model.id.in_(job_ids), model.lease_owner == owner,
                                               model.status == "running")
                           .values(progress_step=step, progress_total=total)
                           .returning(model.id, model.cancel_requested)).all()
    session.commit()
    requested = {job_id for job_id, cancel in rows if cancel}
    gone = set(job_ids) - {job_id for job_id, _ in rows}
    if gone:
        requested |= set(session.scalars(select(model.id).where(model.id.in_(gone), model.cancel_requested.is_(True))))
    return requested


def finish_canceled(session: Session, job_ids: list[str], owner: str, model: type = Job) -> None:
    if job_ids:
        session.execute(update(model).where(model.id.in_(job_ids), model.status == "running",
                                            model.lease_owner == owner)
                        .values(status="canceled", finished_at=utcnow(), lease_owner=None, lease_expires_at=None))
        session.commit()


def finish_failed(session: Session, job_ids: list[str], owner: str, error: str, model: type = Job) -> None:
    if job_ids:
        session.execute(update(model).where(model.id.in_(job_ids), model.status == "running",
                                            model.lease_owner == owner)
                        .values(status="failed", error=error[:4000], finished_at=utcnow(), lease_owner=None,
                                lease_expires_at=None))
        session.commit()


def store_images(session: Session, rows: list[dict]) -> None:
    """Insert image rows; rows that already exist (a second run of the task) are left alone."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only the two supported backends
        raise RuntimeError(f"unsupported database dialect {dialect!r}")
    session.execute(insert(Image).values(rows).on_conflict_do_nothing(
        index_elements=["job_id", "position", "method"]))


def store_previews(session: Session, rows: list[dict]) -> None:
    """Insert preview rows; rows a previous run of the task wrote are left alone."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(Preview).values(rows).on_conflict_do_nothing(
        index_elements=["job_id", "position", "method", "frame"]))


def complete(session: Session, job_id: str, image_rows: list[dict], preview_rows: list[dict] | None = None) -> bool:
    """Store a job's images (and previews) and mark it succeeded, in one transaction.

    Not guarded by the lease owner: if a slow worker whose lease was taken
    over finishes first, its images are as good as the new run's, and the
    other run then finds the job finished. When the job is no longer
    runnable (canceled meanwhile, or finished by another run) nothing is
    stored and False is returned.
    """
    store_images(session, image_rows)
    store_previews(session, preview_rows or [])
    res = session.execute(update(Job).where(Job.id == job_id, Job.status.in_(("running", "queued")),
                                            Job.cancel_requested.is_(False)).values(
        status="succeeded", finished_at=utcnow(), lease_owner=None, lease_expires_at=None,
        progress_step=Job.progress_total, error=None))
    if res.rowcount != 1:
        session.rollback()
        return False
    session.commit()
    return True


# -- reaping ----------------------------------------------------------------------

@dataclass
class ReapResult:
    requeued: list[str]       # running jobs whose worker was lost; back to queued
    resent: list[str]         # queued jobs the broker seems to have lost; sent again
    failed: list[str]         # lost too often
    canceled: list[str]       # lost while a cancel was pending

    @property
    def to_enqueue(self) -> list[str]:
        return self.requeued + self.resent


LOST_MESSAGE_GRACE_SECONDS = 5.0  # a message just sent may be on its way to a worker's claim


def reap(session: Session, *, max_attempts: int, requeue_after_seconds: float,
         now: datetime | None = None, messages_waiting: int | None = None,
         lost_grace_seconds: float = LOST_MESSAGE_GRACE_SECONDS, model: type = Job,
         queued_elsewhere: int = 0) -> ReapResult:
    """Find jobs the database says are waiting or running but nobody holds. Commits.

    * running, lease expired: the worker died (or hung) -> back to queued, to
      be sent again; canceled if a cancel was pending; failed after
      ``max_attempts`` losses.
    * queued, last sent more than ``requeue_after_seconds`` ago (or never,
      e.g. the broker was down at submit time) -> sent again. A duplicate
      message is harmless: ``claim`` lets only one delivery run the job.

    ``messages_waiting`` (the broker's queue length, when known) avoids
    resending during a mere backlog: while the broker holds at least one
    message per queued job, nothing was lost and nothing is resent. When it
    holds fewer (a Redis restart without persistence emptied it), messages
    were lost, and queued jobs sent more than ``lost_grace_seconds`` ago are
    sent again at once rather than after ``requeue_after_seconds``.

    ``model`` is the job table (generation jobs, or ``worker.analysis_models.AnalysisJob``);
    ``queued_elsewhere`` counts the queued jobs of the other tables, whose
    messages share the broker's queue. The caller sends the ids in
    ``to_enqueue`` to the broker, as that table's task.
    """
    now = now or utcnow()
    result = ReapResult([], [], [], [])
    expired = list(session.scalars(select(model.id).where(model.status == "running", model.lease_expires_at < now)))
    for job_id in expired:
        lost = and_(model.id == job_id, model.status == "running", model.lease_expires_at < now)
        job = session.get(model, job_id)
        if job is None:
            continue
        if job.cancel_requested:
            values, bucket = dict(status="canceled", finished_at=now), result.canceled
        elif job.attempts >= max_attempts:
            values = dict(status="failed", finished_at=now,
                          error=f"gave up after {job.attempts} attempts: the worker running it was lost each time")
            bucket = result.failed
        else:
            values, bucket = dict(status="queued", enqueued_at=now, progress_step=0), result.requeued
        res = session.execute(update(model).where(lost).values(lease_owner=None, lease_expires_at=None, **values))
        if res.rowcount == 1:
            bucket.append(job_id)
    stale_before = now - timedelta(seconds=requeue_after_seconds)
    if messages_waiting is not None:
        # The broker's queue carries every job table's messages.
        queued = (session.scalar(select(func.count()).select_from(model).where(model.status == "queued")) or 0) \
            + queued_elsewhere
        if messages_waiting < queued:
            stale_before = now - timedelta(seconds=min(lost_grace_seconds, requeue_after_seconds))
    waiting = list(session.scalars(select(model.id).where(
        model.status == "queued", or_(model.enqueued_at.is_(None), model.enqueued_at < stale_before))))
    if waiting and messages_waiting is not None and messages_waiting >= queued:
        waiting = []
    for job_id in waiting:
        res = session.execute(update(model).where(
            model.id == job_id, model.status == "queued",
            or_(model.enqueued_at.is_(None), model.enqueued_at < stale_before)).values(enqueued_at=now))
        if res.rowcount == 1:
            result.resent.append(job_id)
    session.commit()
    for name in ("requeued", "resent", "failed", "canceled"):
        ids = getattr(result, name)
        if ids:
            log.warning("reaper: %s %d job(s): %s", name, len(ids), ", ".join(ids))
    return result


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES
