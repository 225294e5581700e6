"""Recording one answer, or refusing it with a reason and changing nothing.

The checks run in the order a reader of a refusal needs: is the study open,
is this pair assigned to this rater, was it answered already, is the answer
well formed, had the images loaded. The database has the last word: the
vote's ``UNIQUE(rater_id, pair_id)`` turns a double click or a replayed
POST that slipped past the checks (two requests at the same instant) into
a refusal, and the vote and its assignment's ``answered_at`` are written in
one transaction.
"""
from __future__ import annotations

import math
import uuid

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.survey.studies import is_row_id
from worker.db import utcnow
from worker.survey_models import (
    ANSWERS,
    SAME,
    Assignment,
    Rater,
    Study,
    SurveyPair,
    SurveyVote,
)

MAX_MS = 24 * 3600 * 1000.0


class VoteRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def study_not_open(study: Study) -> VoteRefused | None:
    if study.status == "open":
        return None
    if study.status == "closed":
        return VoteRefused(409, "this study is closed: no more answers are accepted, and this one was not recorded")
    if study.status == "generating":
        return VoteRefused(409, "this study is not open yet: its images are still being generated")
    return VoteRefused(409, "this study is not available (its images could not be generated)")


def parse_ms(value: str | None, field: str) -> float | None:
    """A duration sent by the page's script; empty means not measured (no JavaScript)."""
    if value is None or str(value).strip() == "":
        return None
    try:
        ms = float(value)
    except ValueError:
        raise VoteRefused(422, f"{field} must be a number of milliseconds, got {value!r}") from None
    if not math.isfinite(ms) or ms < 0 or ms > MAX_MS:
        raise VoteRefused(422, f"{field} must be between 0 and {MAX_MS:.0f} milliseconds, got {value!r}")
    return ms


def parse_loaded(value: str | None) -> bool | None:
    text = (value or "").strip().lower()
    if text == "":
        return None  # no JavaScript ran: whether the images had loaded is unknown
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise VoteRefused(422, f"loaded must be 1 or 0 (or absent), got {value!r}")


def choice_for(study: Study, pair: SurveyPair, a_side: str, side: str) -> str:
    """The answer as a method name (or "same"), from the side clicked and the side A was on."""
    if side == SAME:
        return SAME
    if pair.is_attention_check and pair.check_method:
        return pair.check_method  # the same image on both sides: either side "chooses" its method
    if pair.arm_a is not None:  # a multi-arm study: the arm on the side clicked
        return pair.arm_a if side == a_side else pair.arm_b
    return study.method_a if side == a_side else study.method_b


def check_passed(pair: SurveyPair, side: str) -> bool | None:
    """Whether an answer passes the pair's attention check (None for a real pair)."""
    if not pair.is_attention_check:
        return None
    return side == (pair.check_answer or SAME)


def record_vote(session: Session, study: Study, rater: Rater, *, pair_id: str | None, answer: str | None,
                loaded: str | None = None, load_ms: str | None = None, client_ms: str | None = None,
                input_kind: str | None = None) -> SurveyVote:
    """Store the rater's answer to ``pair_id``. Raises ``VoteRefused`` (nothing stored) when it cannot count."""
    refused = study_not_open(study)
    if refused:
        raise refused
    if not pair_id:
        raise VoteRefused(422, "the form does not say which pair is answered (field 'pair')")
    assignment = None
    if is_row_id(pair_id):
        assignment = session.scalar(select(Assignment).where(Assignment.rater_id == rater.id,
                                                             Assignment.pair_id == pair_id,
                                                             Assignment.study_id == study.id))
    if assignment is None:
        raise VoteRefused(403, f"pair {str(pair_id)[:64]!r} is not assigned to you in this study; only the pair "
                               "on your screen can be answered")
    if rater.excluded_at is not None or rater.completed_at is not None:
        raise VoteRefused(409, "your session in this study has ended; this answer was not recorded")
    if assignment.answered_at is None and assignment.released_at is not None:
        # Left unanswered past the study's time-out: the slot went back to the pool. Taken back
        # if the pair still has room; otherwise another rater has it.
        from app.survey.assign import reacquire

        if not reacquire(session, study, assignment):
            raise VoteRefused(409, "this pair was given to another participant after "
                                   f"{_duration(study.assignment_timeout_seconds)} without an answer, so this "
                                   "answer was not recorded; please continue with the next pair")
    if assignment.answered_at is not None:
        raise VoteRefused(409, f"you already answered this pair (item {assignment.position}); your first answer "
                               "is kept")
    side = (answer or "").strip().lower()
    if side not in ANSWERS:
        raise VoteRefused(422, f"answer must be one of left, right or same, got {answer!r}")
    images_loaded = parse_loaded(loaded)
    if images_loaded is False:
        raise VoteRefused(422, "the images had not finished loading, so this answer does not count; wait until "
                               "both images are shown, then answer again")
    client = parse_ms(client_ms, "response time")
    load = parse_ms(load_ms, "load time")
    kind = (input_kind or "form").strip().lower()
    if kind not in ("click", "key", "form"):
        raise VoteRefused(422, f"input must be click, key or form, got {input_kind!r}")
    if images_loaded is None:
        kind = "form"  # without the script, nothing measured how the answer was given

    pair = session.get(SurveyPair, assignment.pair_id)
    now = utcnow()
    server_ms = max(0.0, (now - assignment.assigned_at).total_seconds() * 1000.0)
    # The flag trusts only the server's clock: a script can report any client time, but cannot
    # answer sooner after the pair was assigned than it did. The client's time is kept as data.
    vote = SurveyVote(
        id=uuid.uuid4().hex, study_id=study.id, rater_id=rater.id, pair_id=pair.id, assignment_id=assignment.id,
        side=side, choice=choice_for(study, pair, assignment.a_side, side), a_side=assignment.a_side,
        position=assignment.position, client_ms=client, server_ms=round(server_ms, 1), images_loaded=images_loaded,
        load_ms=load, input=kind, too_fast=server_ms < study.min_answer_ms,
        is_attention_check=pair.is_attention_check, attention_passed=check_passed(pair, side), created_at=now)
    session.add(vote)
    try:
        session.flush()
        res = session.execute(update(Assignment).where(Assignment.id == assignment.id,
                                                       Assignment.answered_at.is_(None),
                                                       Assignment.released_at.is_(None))
                              .values(answered_at=now).execution_options(synchronize_session=False))
        if res.rowcount != 1:
            raise IntegrityError("answered concurrently", None, Exception("assignment already answered"))
        # The study may have closed between our read and this write.
        still_open = session.scalar(select(Study.status).where(Study.id == study.id)) == "open"
        if not still_open:
            session.rollback()
            raise VoteRefused(409, "this study closed just now: this answer was not recorded")
        session.commit()
    except IntegrityError:
        session.rollback()
        released = session.scalar(select(Assignment.released_at).where(Assignment.id == assignment.id,
                                                                       Assignment.answered_at.is_(None)))
        if released is not None:
            raise VoteRefused(409, "this pair was given to another participant just now, so this answer was not "
                                   "recorded; please continue with the next pair") from None
        raise VoteRefused(409, f"you already answered this pair (item {assignment.position}); your first answer "
                               "is kept") from None
    from app.survey.quality import after_vote

    after_vote(session, study, rater, vote)
    return vote


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hour{'s' if seconds != 3600 else ''}"
    if seconds % 60 == 0:
        return f"{seconds // 60} minute{'s' if seconds != 60 else ''}"
    return f"{seconds} seconds"
