"""The evaluations' store: create, read, cancel, resume, complete shards, merge rows (torch-free, Celery-free).

Claiming a shard, its lease, progress, failing and reaping are
``worker.jobs``'s guarded updates with ``model=EvaluationShard``; what is
here is what only an evaluation has: its shards, its merged rows and its
status, which follows from its shards.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worker.db import utcnow
from worker.evaluation_models import Evaluation, EvaluationShard
from worker.ids import is_row_id, new_id


def create(session: Session, *, preset: str, settings: dict[str, Any], plan: dict[str, Any],
           shards: list[tuple[int, int, int, int]], shard_size: int, owner_key_id: str) -> tuple[Evaluation, list[str]]:
    """Insert an evaluation and its queued shards ((row, start, stop, steps per image) each). Commits."""
    ev = Evaluation(id=new_id(), preset=preset, settings=settings, plan=plan, shard_size=shard_size,
                    num_shards=len(shards), num_images=plan["n"] * len(plan["rows"]), cancel_requested=False,
                    rows={}, owner_key_id=owner_key_id)
    session.add(ev)
    session.flush()
    ids = []
    for row, start, stop, steps in shards:
        shard = EvaluationShard(id=new_id(), evaluation_id=ev.id, row_index=row, start=start, stop=stop,
                                status="queued", progress_step=0, progress_total=(stop - start) * steps,
                                cancel_requested=False, attempts=0, computed=0)
        session.add(shard)
        ids.append(shard.id)
    session.commit()
    return ev, ids


def get(session: Session, evaluation_id: str) -> Evaluation | None:
    return session.get(Evaluation, evaluation_id) if is_row_id(evaluation_id) else None


def list_for(session: Session, owner_key_id: str | None, limit: int = 100) -> list[Evaluation]:
    stmt = select(Evaluation).order_by(Evaluation.created_at.desc(), Evaluation.id.desc()).limit(limit)
    if owner_key_id is not None:
        stmt = stmt.where(Evaluation.owner_key_id == owner_key_id)
    return list(session.scalars(stmt))


def shards_of(session: Session, evaluation_id: str) -> list[EvaluationShard]:
    return list(session.scalars(select(EvaluationShard).where(EvaluationShard.evaluation_id == evaluation_id)
                                .order_by(EvaluationShard.row_index, EvaluationShard.start)))


def summary(session: Session, evaluation_id: str) -> dict[str, Any]:
    """Shards per status and progress in image-steps (each shard's images times the row's sampling steps)."""
    rows = session.execute(select(EvaluationShard.status, func.count(), func.sum(EvaluationShard.progress_step),
                                  func.sum(EvaluationShard.progress_total))
                           .where(EvaluationShard.evaluation_id == evaluation_id)
                           .group_by(EvaluationShard.status)).all()
    counts = {s: 0 for s in ("queued", "running", "succeeded", "failed", "canceled")}
    done = total = 0
    for status, n, step, tot in rows:
        counts[status] = int(n)
        total += int(tot or 0)
        done += int(tot or 0) if status == "succeeded" else int(step or 0)
    return {"shards": counts, "progress_step": done, "progress_total": total}


def status_of(ev: Evaluation, counts: dict[str, int]) -> str:
    """succeeded once merged; failed if a shard gave up; canceled once nothing runs after a cancel."""
    if ev.result is not None:
        return "succeeded"
    if counts.get("failed"):
        return "failed"
    if ev.cancel_requested:
        return "running" if counts.get("running") else "canceled"
    if counts.get("running") or counts.get("succeeded"):
        return "running"
    return "queued"


def cancel(session: Session, evaluation_id: str) -> None:
    """Queued shards end at once; running ones stop at their next progress report. Commits."""
    now = utcnow()
    session.execute(update(Evaluation).where(Evaluation.id == evaluation_id, Evaluation.result.is_(None))
                    .values(cancel_requested=True))
    session.execute(update(EvaluationShard).where(EvaluationShard.evaluation_id == evaluation_id,
                                                  EvaluationShard.status == "queued")
                    .values(status="canceled", cancel_requested=True, finished_at=now))
    session.execute(update(EvaluationShard).where(EvaluationShard.evaluation_id == evaluation_id,
                                                  EvaluationShard.status == "running")
                    .values(cancel_requested=True))
    session.commit()


def resume(session: Session, evaluation_id: str) -> list[str]:
    """Queue again the shards that failed or were canceled; finished shards stay as they are. Commits.

    Returns the shard ids to send to the broker.
    """
    session.execute(update(Evaluation).where(Evaluation.id == evaluation_id)
                    .values(cancel_requested=False, error=None))
    ids = list(session.scalars(select(EvaluationShard.id).where(
        EvaluationShard.evaluation_id == evaluation_id, EvaluationShard.status.in_(("failed", "canceled")))))
    if ids:
        session.execute(update(EvaluationShard).where(EvaluationShard.id.in_(ids)).values(
            status="queued", cancel_requested=False, attempts=0, error=None, progress_step=0, finished_at=None,
            enqueued_at=None, lease_owner=None, lease_expires_at=None))
    else:
        # Every shard is in but the merge did not finish (its worker was lost): send one shard per row again;
        # a worker that finds it finished merges instead of sampling.
        ev = get(session, evaluation_id)
        if ev is not None and ev.result is None:
            ids = list(session.scalars(select(func.min(EvaluationShard.id)).where(
                EvaluationShard.evaluation_id == evaluation_id).group_by(EvaluationShard.row_index)))
    session.commit()
    return ids


# -- called by workers ------------------------------------------------------------------

def count_computed(session: Session, shard_id: str) -> None:
    """One more run sampled this shard to the end (whether or not its result is the one kept)."""
    session.execute(update(EvaluationShard).where(EvaluationShard.id == shard_id)
                    .values(computed=EvaluationShard.computed + 1))
    session.commit()


def complete_shard(session: Session, shard_id: str, file: str, seconds: float, owner: str) -> bool:
    """Record the shard's file and mark it succeeded, unless it was canceled or finished meanwhile."""
    res = session.execute(update(EvaluationShard).where(
        EvaluationShard.id == shard_id, EvaluationShard.status == "running",
        EvaluationShard.cancel_requested.is_(False)).values(
        status="succeeded", file=file, seconds=seconds, worker=owner, finished_at=utcnow(), lease_owner=None,
        lease_expires_at=None, progress_step=EvaluationShard.progress_total, error=None))
    session.commit()
    return res.rowcount == 1


def row_shards_if_done(session: Session, evaluation_id: str, row_index: int) -> list[EvaluationShard] | None:
    shards = list(session.scalars(select(EvaluationShard).where(
        EvaluationShard.evaluation_id == evaluation_id, EvaluationShard.row_index == row_index)
        .order_by(EvaluationShard.start)))
    return shards if shards and all(s.status == "succeeded" for s in shards) else None


def store_row(session: Session, evaluation_id: str, row_index: int, result: dict[str, Any]) -> dict[str, Any]:
    """Add a merged row to the evaluation; returns every merged row so far. Commits.

    The evaluation's row is locked for the read-modify-write (two workers may
    finish two rows at once); on SQLite the single writer is the lock.
    """
    stmt = select(Evaluation).where(Evaluation.id == evaluation_id)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    ev = session.scalar(stmt.execution_options(populate_existing=True))
    rows = dict(ev.rows or {})
    rows.setdefault(str(row_index), result)
    ev.rows = rows
    session.commit()
    return rows


def finish(session: Session, evaluation_id: str, result: dict[str, Any], when: datetime | None = None) -> bool:
    res = session.execute(update(Evaluation).where(Evaluation.id == evaluation_id, Evaluation.result.is_(None))
                          .values(result=result, finished_at=when or utcnow(), error=None))
    session.commit()
    return res.rowcount == 1
