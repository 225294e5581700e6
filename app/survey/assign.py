"""Raters and what they are shown: who they are, which pair comes next, on which side.

* **Order.** A rater's next pair is one they have not seen, with the fewest
  assignments so far (coverage stays even while raters come and go), ties
  broken by the rater's own random order: ``sha256(order_seed, pair id)``.
  ``order_seed`` is stored with the rater, so every sequence can be replayed.
* **Caps.** A pair is assigned to at most ``raters_per_pair`` raters; a rater
  sees at most ``pairs_per_rater`` real pairs, plus the attention checks at
  random positions of their sequence (never the first).
* **Counterbalancing.** The pair's k-th assignment (k = 0, 1, 2, ...) shows
  method A on the left when ``(k % 2 == 0) == a_left_first``. k comes from a
  guarded ``UPDATE ... SET n_assigned = n_assigned + 1 ... RETURNING``, so two
  raters arriving together still get consecutive k: each pair's A-left count
  is within one of half its assignments, whatever the concurrency.
* **Resume.** A rater has at most one unanswered assignment; it is served
  again (same pair, same sides) until answered.
"""
from __future__ import annotations

import hashlib
import random
import re
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.db import utcnow
from worker.survey_models import Assignment, Rater, Study, SurveyPair, SurveyVote

# Prolific's ids are 24 hex characters; other platforms use similar tokens. Anything
# else (spaces, markup, very long strings) is refused rather than stored.
PARTICIPANT_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


class ParticipantError(ValueError):
    """A malformed crowd-platform id in the study link."""


@dataclass(frozen=True)
class Participant:
    pid: str | None = None
    platform_study_id: str | None = None
    platform_session_id: str | None = None

    @classmethod
    def from_params(cls, pid: str | None, study: str | None, session: str | None) -> Participant:
        values = {}
        for name, value in (("PROLIFIC_PID", pid), ("STUDY_ID", study), ("SESSION_ID", session)):
            value = (value or "").strip() or None
            if value is not None and not PARTICIPANT_ID.match(value):
                raise ParticipantError(f"{name} in the study link is not a valid id (letters, digits and _.:@- "
                                       "only, at most 128 characters); please use the link the platform gave you")
            values[name] = value
        return cls(values["PROLIFIC_PID"], values["STUDY_ID"], values["SESSION_ID"])


def rank(order_seed: int, pair_id: str) -> bytes:
    return hashlib.sha256(f"{order_seed}:{pair_id}".encode()).digest()


def a_side_for(k: int, a_left_first: bool) -> str:
    return "left" if (k % 2 == 0) == a_left_first else "right"


# -- raters ----------------------------------------------------------------------------

def rater_by_browser(session: Session, study: Study, browser_id: str | None) -> Rater | None:
    if browser_id is None:
        return None
    return session.scalar(select(Rater).where(Rater.study_id == study.id, Rater.browser_id == browser_id))


def rater_by_participant(session: Session, study: Study, pid: str) -> Rater | None:
    return session.scalar(select(Rater).where(Rater.study_id == study.id, Rater.external_id == f"prolific:{pid}"))


def rebind(session: Session, rater: Rater, browser_id: str) -> Rater:
    """A returning participant on another browser: their progress follows them to this one. Commits."""
    if rater.browser_id != browser_id:
        rater.browser_id = browser_id
        session.commit()
    return rater


def has_room(session: Session, study: Study) -> bool:
    """Whether any real pair can still take a rater (the per-pair cap)."""
    return session.scalar(select(func.count()).where(
        SurveyPair.study_id == study.id, SurveyPair.is_attention_check.is_(False),
        SurveyPair.n_assigned < study.raters_per_pair)) > 0


def start_rater(session: Session, study: Study, browser_id: str, participant: Participant,
                user_agent: str | None = None) -> Rater:
    """The rater for this participant (an existing one is re-bound to this browser), created on consent. Commits."""
    if participant.pid:
        external, source = f"prolific:{participant.pid}", "prolific"
        existing = rater_by_participant(session, study, participant.pid)
    else:
        external, source = f"anon:{browser_id}", "anonymous"
        existing = rater_by_browser(session, study, browser_id)
    if existing is not None:
        return rebind(session, existing, browser_id)
    n_real = session.scalar(select(func.count()).where(SurveyPair.study_id == study.id,
                                                       SurveyPair.is_attention_check.is_(False)))
    n_checks = session.scalar(select(func.count()).where(SurveyPair.study_id == study.id,
                                                         SurveyPair.is_attention_check.is_(True)))
    planned_real = min(study.pairs_per_rater, n_real)
    planned = planned_real + n_checks
    order_seed = secrets.randbits(62)
    rng = random.Random(order_seed)
    # Checks anywhere but first: the first pair a rater sees should be a real one.
    slots = list(range(2, planned + 1)) or [1]
    check_positions = sorted(rng.sample(slots, min(n_checks, len(slots))))
    rater = Rater(id=uuid.uuid4().hex, study_id=study.id, external_id=external, source=source,
                  platform_study_id=participant.platform_study_id,
                  platform_session_id=participant.platform_session_id, browser_id=browser_id,
                  order_seed=order_seed, check_positions=check_positions, planned=planned,
                  user_agent=(user_agent or "")[:500] or None)
    session.add(rater)
    try:
        session.commit()
    except IntegrityError:
        # The same participant consented twice at once (two tabs): one row wins.
        session.rollback()
        winner = session.scalar(select(Rater).where(Rater.study_id == study.id, Rater.external_id == external))
        if winner is None:
            raise
        return rebind(session, winner, browser_id)
    return rater


# -- assignments ---------------------------------------------------------------------------

def open_assignment(session: Session, rater: Rater) -> Assignment | None:
    return session.scalar(select(Assignment).where(Assignment.rater_id == rater.id,
                                                   Assignment.answered_at.is_(None))
                          .order_by(Assignment.position).limit(1))


def answered_count(session: Session, rater: Rater) -> int:
    return session.scalar(select(func.count()).where(SurveyVote.rater_id == rater.id)) or 0


def current_assignment(session: Session, study: Study, rater: Rater) -> Assignment | None:
    """The pair this rater answers now: the unanswered one, else a new one; None when they are done. Commits."""
    for _ in range(5):
        current = open_assignment(session, rater)
        if current is not None:
            return current
        try:
            return _assign_next(session, study, rater)
        except IntegrityError:
            # A concurrent request of this same rater (a reload while the page was
            # loading) assigned this position first; serve what it assigned.
            session.rollback()
    raise RuntimeError(f"could not assign a pair to rater {rater.id} after 5 attempts")


def _assign_next(session: Session, study: Study, rater: Rater) -> Assignment | None:
    seen = set(session.scalars(select(Assignment.pair_id).where(Assignment.rater_id == rater.id)))
    position = len(seen) + 1
    if position > rater.planned:
        return None
    pairs = session.execute(select(SurveyPair.id, SurveyPair.n_assigned, SurveyPair.is_attention_check)
                            .where(SurveyPair.study_id == study.id)).all()
    real = [p for p in pairs if not p.is_attention_check and p.id not in seen
            and p.n_assigned < study.raters_per_pair]
    checks = [p for p in pairs if p.is_attention_check and p.id not in seen]
    real_seen = sum(1 for p in pairs if p.id in seen and not p.is_attention_check)
    if real_seen >= study.pairs_per_rater:
        real = []
    # A check at its planned position; otherwise a real pair; when the real pairs
    # have run out (caps), any remaining checks, then the end.
    preferred, fallback = (checks, real) if position in rater.check_positions else (real, checks)
    for group in (preferred, fallback):
        for p in sorted(group, key=lambda p: (p.n_assigned, rank(rater.order_seed, p.id))):
            guard = [SurveyPair.id == p.id]
            if not p.is_attention_check:
                guard.append(SurveyPair.n_assigned < study.raters_per_pair)
            k = session.execute(update(SurveyPair).where(*guard)
                                .values(n_assigned=SurveyPair.n_assigned + 1)
                                .returning(SurveyPair.n_assigned)
                                .execution_options(synchronize_session=False)).scalar_one_or_none()
            if k is None:  # filled up by another rater since we looked
                continue
            pair = session.get(SurveyPair, p.id)
            assignment = Assignment(id=uuid.uuid4().hex, study_id=study.id, rater_id=rater.id, pair_id=p.id,
                                    position=position, a_side=a_side_for(k - 1, pair.a_left_first),
                                    assigned_at=utcnow())
            session.add(assignment)
            session.commit()
            return assignment
    session.rollback()
    return None


def mark_completed(session: Session, rater: Rater) -> None:
    if rater.completed_at is None:
        session.execute(update(Rater).where(Rater.id == rater.id, Rater.completed_at.is_(None))
                        .values(completed_at=utcnow()))
        session.commit()
        session.refresh(rater)
