"""Rater quality: per-rater numbers, flags, exclusion, and the per-rater table a platform approval needs.

* **Attention checks** (``app.survey.studies`` makes them from images outside
  the study): an *instructed* check names the side to choose; an *identical*
  check shows one image twice, where "Same" passes. A rater who fails more
  than ``max_attention_failures`` is excluded at once and their session ends
  (outcome ``failed_checks``).
* **Flags**, computed from the rater's answers once they have at least
  ``flag_min_answers``:

  - ``mostly_same``: the share of "Same" among real answers is at least ``flag_same_share``;
  - ``one_side``: every side answer is the same side (all Left, or all Right);
  - ``too_fast``: the share of answers flagged too fast (server clock) is at least ``flag_fast_share``.

  Flags are for review; those listed in the study's ``exclude_flags`` also
  exclude the rater when they finish.
* **Exclusion** (failed checks, a flag the study excludes on, or the
  researcher) keeps the rater's votes but leaves them out of the statistics
  and of the completion counts, and gives their slots back so other raters
  can take the pairs (``app.survey.assign.release_rater``).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.survey import assign
from worker.db import utcnow
from worker.survey_models import Assignment, Rater, Study, SurveyVote

FLAGS = {
    "mostly_same": "answered Same to at least the study's flag_same_share of the real pairs",
    "one_side": "chose the same side (always Left or always Right) in every side answer",
    "too_fast": "at least the study's flag_fast_share of the answers came faster than min_answer_ms",
}
FLAG_NAMES = tuple(FLAGS)
FAILED_CHECKS = "failed_checks"

# The per-rater table: one row per rater with everything stored about them and what follows from it.
RATER_COLUMNS = (
    "study_id", "rater_id", "participant", "source", "platform_study_id", "platform_session_id", "submit_to",
    "status", "outcome", "exit_code", "excluded", "exclusion_reason", "flags",
    "consented_at", "started_at", "last_answer_at", "finished_at", "duration_s",
    "planned", "answers", "real_answers", "checks_answered", "checks_failed",
    "same_share", "left_answers", "right_answers", "fast_answers", "median_response_ms",
    "released_assignments", "user_agent", "order_seed", "check_positions",
)


@dataclass(frozen=True)
class RaterNumbers:
    answers: int
    real_answers: int
    same: int
    left: int
    right: int
    fast: int
    checks_answered: int
    checks_failed: int
    median_ms: float | None
    first_at: object
    last_at: object


def numbers(votes: list[SurveyVote]) -> RaterNumbers:
    real = [v for v in votes if not v.is_attention_check]
    checks = [v for v in votes if v.is_attention_check]
    times = [v.response_ms for v in votes]
    return RaterNumbers(
        answers=len(votes), real_answers=len(real), same=sum(v.side == "same" for v in real),
        left=sum(v.side == "left" for v in real), right=sum(v.side == "right" for v in real),
        fast=sum(bool(v.too_fast) for v in votes), checks_answered=len(checks),
        checks_failed=sum(v.attention_passed is False for v in checks),
        median_ms=statistics.median(times) if times else None,
        first_at=min((v.created_at for v in votes), default=None),
        last_at=max((v.created_at for v in votes), default=None))


def flags_for(study: Study, n: RaterNumbers) -> list[str]:
    out = []
    if n.real_answers >= study.flag_min_answers and n.same >= study.flag_same_share * n.real_answers:
        out.append("mostly_same")
    sides = n.left + n.right
    if sides >= study.flag_min_answers and (n.left == 0 or n.right == 0):
        out.append("one_side")
    if n.answers >= study.flag_min_answers and n.fast >= study.flag_fast_share * n.answers:
        out.append("too_fast")
    return out


def _votes_of(session: Session, rater: Rater) -> list[SurveyVote]:
    return list(session.scalars(select(SurveyVote).where(SurveyVote.rater_id == rater.id)))


# -- exclusion ---------------------------------------------------------------------------------

def exclude(session: Session, rater: Rater, reason: str) -> bool:
    """Leave the rater out of the statistics and give their slots back. Commits; False if already excluded."""
    res = session.execute(update(Rater).where(Rater.id == rater.id, Rater.excluded_at.is_(None))
                          .values(excluded_at=utcnow(), exclusion_reason=reason[:255]))
    if res.rowcount != 1:
        session.rollback()
        return False
    assign.release_rater(session, rater)
    session.commit()
    session.refresh(rater)
    return True


def include(session: Session, rater: Rater) -> bool:
    """Undo an exclusion: the rater's answers count again, and so do their slots. Commits."""
    res = session.execute(update(Rater).where(Rater.id == rater.id, Rater.excluded_at.is_not(None))
                          .values(excluded_at=None, exclusion_reason=None))
    if res.rowcount != 1:
        session.rollback()
        return False
    assign.restore_rater(session, rater)
    session.commit()
    session.refresh(rater)
    return True


def after_vote(session: Session, study: Study, rater: Rater, vote: SurveyVote) -> None:
    """A failed check beyond the study's allowance excludes the rater at once."""
    if not vote.is_attention_check or vote.attention_passed is not False or rater.excluded_at is not None:
        return
    failed = session.scalar(select(func.count()).where(SurveyVote.rater_id == rater.id,
                                                       SurveyVote.attention_passed.is_(False))) or 0
    if failed > study.max_attention_failures:
        exclude(session, rater, FAILED_CHECKS)


def on_finish(session: Session, study: Study, rater: Rater) -> list[str]:
    """At the end of a rater's session: their flags; those the study excludes on exclude them."""
    flags = flags_for(study, numbers(_votes_of(session, rater)))
    hit = [f for f in flags if f in (study.exclude_flags or [])]
    if hit and rater.excluded_at is None:
        exclude(session, rater, "flagged: " + ", ".join(hit))
    return flags


# -- the per-rater table ---------------------------------------------------------------------------

def status_of(study: Study, rater: Rater, last_activity, now) -> str:
    if rater.excluded_at is not None:
        return "excluded"
    if rater.completed_at is not None:
        return "completed" if rater.outcome in (None, "completed") else rater.outcome
    if study.status in ("closed", "failed"):
        return "closed_midway"
    if (now - last_activity).total_seconds() > study.assignment_timeout_seconds:
        return "abandoned"
    return "in_progress"


def rater_rows(session: Session, study: Study) -> list[dict]:
    """Every rater of the study with every stored field, their numbers, flags and status; by consent time."""
    from app.survey.exits import exit_for

    raters = list(session.scalars(select(Rater).where(Rater.study_id == study.id)
                                  .order_by(Rater.consented_at, Rater.id)))
    votes: dict[str, list[SurveyVote]] = {}
    for v in session.scalars(select(SurveyVote).where(SurveyVote.study_id == study.id)):
        votes.setdefault(v.rater_id, []).append(v)
    assigned: dict[str, list[Assignment]] = {}
    for a in session.scalars(select(Assignment).where(Assignment.study_id == study.id)):
        assigned.setdefault(a.rater_id, []).append(a)
    now = utcnow()
    rows = []
    for r in raters:
        n = numbers(votes.get(r.id, []))
        mine = assigned.get(r.id, [])
        started = min((a.assigned_at for a in mine), default=None)
        last = max([r.consented_at, *(a.assigned_at for a in mine), *([n.last_at] if n.last_at else [])])
        finished = r.completed_at
        end = finished or n.last_at
        status = status_of(study, r, last, now)
        outcome = r.outcome or ("closed_midway" if study.status == "closed" and finished is None else None)
        rows.append({
            "study_id": study.id, "rater_id": r.id, "participant": r.external_id, "source": r.source,
            "platform_study_id": r.platform_study_id, "platform_session_id": r.platform_session_id,
            "submit_to": r.submit_to, "status": status, "outcome": outcome,
            "exit_code": exit_for(study, outcome)["code"] if outcome else None,
            "excluded": r.excluded_at is not None, "exclusion_reason": r.exclusion_reason,
            "flags": flags_for(study, n),
            "consented_at": r.consented_at, "started_at": started, "last_answer_at": n.last_at,
            "finished_at": finished,
            "duration_s": round((end - r.consented_at).total_seconds(), 1) if end else None,
            "planned": r.planned, "answers": n.answers, "real_answers": n.real_answers,
            "checks_answered": n.checks_answered, "checks_failed": n.checks_failed,
            "same_share": round(n.same / n.real_answers, 4) if n.real_answers else None,
            "left_answers": n.left, "right_answers": n.right, "fast_answers": n.fast,
            "median_response_ms": round(n.median_ms, 1) if n.median_ms is not None else None,
            "released_assignments": sum(a.released_at is not None for a in mine),
            "user_agent": r.user_agent, "order_seed": r.order_seed, "check_positions": list(r.check_positions),
        })
    return rows


def counts(rows: list[dict]) -> dict:
    """Recruited, finished, excluded (by reason) and still going: the numbers a report states."""
    reasons: dict[str, int] = {}
    for r in rows:
        if r["excluded"]:
            key = r["exclusion_reason"] or "researcher"
            reasons[key] = reasons.get(key, 0) + 1
    return {
        "recruited": len(rows),
        "completed": sum(r["status"] == "completed" for r in rows),
        "in_progress": sum(r["status"] == "in_progress" for r in rows),
        "abandoned": sum(r["status"] == "abandoned" for r in rows),
        "closed_midway": sum(r["status"] == "closed_midway" for r in rows),
        "no_pairs": sum(r["status"] == "no_pairs" for r in rows),
        "excluded": sum(r["excluded"] for r in rows),
        "excluded_by_reason": reasons,
        "flagged": sum(bool(r["flags"]) for r in rows),
    }
