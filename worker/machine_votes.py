"""The machine-rater pilot's store: its jobs and its votes (torch-free, Celery-free).

Claiming, leases, progress, cancelling, failing and reaping are ``worker.jobs``'s guarded updates with
``model=MachineVoteJob``. What is here is what only the pilot has: one job per (study, judge settings),
votes written with ``ON CONFLICT DO NOTHING`` on ``(pair_id, rater)`` (a re-run after a lost worker
writes the same rows and keeps the ones already there), and the votes read back for their own
statistics and export. Human votes are never read or written here.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from worker.db import utcnow
from worker.ids import is_row_id, new_id
from worker.survey_models import MachineVote, MachineVoteJob, Study, SurveyPair

LIVE = ("queued", "running", "succeeded")


def settings_digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def vote_id(pair_id: str, rater: str) -> str:
    """Deterministic, so that a job that runs twice writes the same rows."""
    return hashlib.sha256(f"{pair_id}/{rater}".encode()).hexdigest()[:32]


def latest(session: Session, study_id: str) -> MachineVoteJob | None:
    return session.scalar(select(MachineVoteJob).where(MachineVoteJob.study_id == study_id)
                          .order_by(MachineVoteJob.created_at.desc(), MachineVoteJob.id.desc()).limit(1))


def live_job(session: Session, study_id: str) -> MachineVoteJob | None:
    """The study's queued, running or succeeded job (the newest), if any."""
    return session.scalar(select(MachineVoteJob).where(MachineVoteJob.study_id == study_id,
                                                       MachineVoteJob.status.in_(LIVE))
                          .order_by(MachineVoteJob.created_at.desc(), MachineVoteJob.id.desc()).limit(1))


def new_job(study: Study, settings: dict[str, Any], owner_key_id: str | None) -> MachineVoteJob:
    """A queued job row, not yet added: the caller adds it in its own transaction."""
    return MachineVoteJob(id=new_id(), study_id=study.id, status="queued", settings=dict(settings),
                          settings_sha256=settings_digest(settings), progress_step=0, progress_total=0,
                          cancel_requested=False, attempts=0, owner_key_id=owner_key_id)


def get(session: Session, job_id: str) -> MachineVoteJob | None:
    return session.get(MachineVoteJob, job_id) if is_row_id(job_id) else None


def count_votes(session: Session, study_id: str) -> int:
    from sqlalchemy import func

    return session.scalar(select(func.count()).select_from(MachineVote).where(MachineVote.study_id == study_id)) or 0


def store_votes(session: Session, rows: list[dict]) -> None:
    """Insert machine votes; rows an earlier run of the job wrote are left alone. Commits."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(MachineVote).values(rows).on_conflict_do_nothing(index_elements=["pair_id", "rater"]))
    session.commit()


def complete(session: Session, job_id: str, result: dict[str, Any]) -> bool:
    res = session.execute(update(MachineVoteJob).where(
        MachineVoteJob.id == job_id, MachineVoteJob.status == "running",
        MachineVoteJob.cancel_requested.is_(False)).values(
        status="succeeded", result=result, finished_at=utcnow(), lease_owner=None, lease_expires_at=None,
        progress_step=MachineVoteJob.progress_total, error=None))
    session.commit()
    return res.rowcount == 1


def delete_all(session: Session, study_id: str) -> int:
    """Forget a study's machine votes and jobs (to run the pilot again with other settings). Commits.

    A running job is asked to cancel first; its worker's next progress write stops it, and its
    ``complete`` then stores nothing.
    """
    session.execute(update(MachineVoteJob).where(MachineVoteJob.study_id == study_id,
                                                 MachineVoteJob.status.in_(("queued", "running")))
                    .values(cancel_requested=True))
    n = session.execute(delete(MachineVote).where(MachineVote.study_id == study_id)).rowcount
    session.execute(delete(MachineVoteJob).where(MachineVoteJob.study_id == study_id,
                                                 MachineVoteJob.status.notin_(("running",))))
    session.commit()
    return n


def vote_rows(session: Session, study: Study) -> list[dict]:
    """One dict per machine vote, in pair order then rater: oriented as the human export's rows."""
    q = (select(MachineVote, SurveyPair).join(SurveyPair, SurveyPair.id == MachineVote.pair_id)
         .where(MachineVote.study_id == study.id).order_by(SurveyPair.ordinal, MachineVote.rater))
    out = []
    for v, p in session.execute(q).all():
        first, second = (p.arm_a, p.arm_b) if p.arm_a is not None else (study.method_a, study.method_b)
        row = {"study_id": study.id, "pair_id": p.id, "pair_ordinal": p.ordinal, "label": p.label,
               "class_name": p.class_name, "seed": p.seed, "rater": v.rater, "side": v.side, "choice": v.choice,
               "a_side": v.a_side, "left_arm": first if v.a_side == "left" else second,
               "right_arm": second if v.a_side == "left" else first, "u_a": v.u_a, "u_b": v.u_b,
               "judge_sha256": v.judge_sha256, "judge": json.dumps(v.judge, sort_keys=True),
               "code_version": v.code_version, "job_id": v.job_id, "created_at": v.created_at.isoformat()}
        if study.arms is not None:
            row.update(arm_a=p.arm_a, arm_b=p.arm_b)
        out.append(row)
    return out
