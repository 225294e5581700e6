"""Raters and what they are shown: who they are, which pair comes next, on which side.

* **Order.** A rater's next pair is one they have not seen, with the fewest
  assignments so far (coverage stays even while raters come and go), ties
  broken by the rater's own random order: ``sha256(order_seed, pair id)``.
  ``order_seed`` is stored with the rater, so every sequence can be replayed.
* **Caps.** A pair is assigned to at most ``raters_per_pair`` raters; a rater
  sees at most ``pairs_per_rater`` real pairs, plus the attention checks at
  random positions of their sequence (never the first).
* **Counterbalancing.** A pair's live assignments are counted per side of
  method A (``n_a_left``, ``n_a_right``); a new one takes the side with fewer,
  and on a tie the alternation by the pair's k-th assignment (k = 0, 1, 2,
  ...): A on the left when ``(k % 2 == 0) == a_left_first``. Without releases
  this is exactly the alternation; after a release the freed side is given out
  next. One guarded ``UPDATE ... RETURNING`` decides the side and counts it,
  so two raters arriving together still get opposite sides: each pair's
  A-left count is within one of half its live assignments, whatever the
  concurrency.
* **Resume.** A rater has at most one unanswered assignment; it is served
  again (same pair, same sides) until answered.
* **Release.** An assignment unanswered for ``assignment_timeout_seconds`` is
  released: its slot counts no more, so another rater can take the pair. The
  rater who comes back gets it again if the pair still has room, else the next
  pair. An excluded rater's assignments are released the same way (their
  votes stay stored, out of the statistics), and restored if the researcher
  includes them again.
"""
from __future__ import annotations

import hashlib
import random
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import and_, case, delete, false, func, or_, select, true, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from app.survey.participants import Participant
from worker.db import utcnow
from worker.survey_models import Assignment, Rater, Study, SurveyPair, SurveyVote

__all__ = ["Participant"]  # re-exported: callers build raters with it


def rank(order_seed: int, pair_id: str) -> bytes:
    return hashlib.sha256(f"{order_seed}:{pair_id}".encode()).digest()


def a_side_for(k: int, a_left_first: bool) -> str:
    return "left" if (k % 2 == 0) == a_left_first else "right"


# -- raters ----------------------------------------------------------------------------

def rater_by_browser(session: Session, study: Study, browser_id: str | None) -> Rater | None:
    if browser_id is None:
        return None
    return session.scalar(select(Rater).where(Rater.study_id == study.id, Rater.browser_id == browser_id))


def rater_by_participant(session: Session, study: Study, participant: Participant) -> Rater | None:
    if participant.external_id is None:
        return None
    return session.scalar(select(Rater).where(Rater.study_id == study.id,
                                              Rater.external_id == participant.external_id))


def rebind(session: Session, rater: Rater, browser_id: str) -> Rater:
    """A returning participant on another browser: their progress follows them to this one. Commits."""
    if rater.browser_id != browser_id:
        rater.browser_id = browser_id
        session.commit()
    return rater


def _live():
    return SurveyPair.n_a_left + SurveyPair.n_a_right


def has_room(session: Session, study: Study) -> bool:
    """Whether any real pair can still take a rater (the per-pair cap on live assignments)."""
    release_expired(session, study)
    return session.scalar(select(func.count()).where(
        SurveyPair.study_id == study.id, SurveyPair.is_attention_check.is_(False),
        _live() < study.raters_per_pair)) > 0


def start_rater(session: Session, study: Study, browser_id: str, participant: Participant,
                user_agent: str | None = None) -> Rater:
    """The rater for this participant (an existing one is re-bound to this browser), created on consent. Commits."""
    if participant.pid:
        external, source = participant.external_id, participant.source
        existing = rater_by_participant(session, study, participant)
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
                  platform_session_id=participant.platform_session_id, submit_to=participant.submit_to,
                  browser_id=browser_id, order_seed=order_seed, check_positions=check_positions, planned=planned,
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
    """The rater's unanswered assignment that still holds its slot."""
    return session.scalar(select(Assignment).where(Assignment.rater_id == rater.id,
                                                   Assignment.answered_at.is_(None),
                                                   Assignment.released_at.is_(None))
                          .order_by(Assignment.position).limit(1))


def released_open_assignment(session: Session, rater: Rater) -> Assignment | None:
    return session.scalar(select(Assignment).where(Assignment.rater_id == rater.id,
                                                   Assignment.answered_at.is_(None),
                                                   Assignment.released_at.is_not(None))
                          .order_by(Assignment.position.desc()).limit(1))


def answered_count(session: Session, rater: Rater, real_only: bool = False) -> int:
    where = [SurveyVote.rater_id == rater.id]
    if real_only:
        where.append(SurveyVote.is_attention_check.is_(False))
    return session.scalar(select(func.count()).where(*where)) or 0


# PostgreSQL's deadlock and serialization-failure codes: the server rolled the transaction back and
# retrying it is the documented remedy (each step below is its own short transaction).
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def is_retryable(exc: OperationalError) -> bool:
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in RETRYABLE_SQLSTATES


def current_assignment(session: Session, study: Study, rater: Rater) -> Assignment | None:
    """The pair this rater answers now: the unanswered one, else a new one; None when they are done. Commits."""
    for _ in range(5):
        current = open_assignment(session, rater)
        if current is not None:
            return current
        released = released_open_assignment(session, rater)
        if released is not None:
            # Back after the time-out: the same pair if it still has room, else one more new pair
            # (the released one no longer counts towards what this rater was planned to see).
            if reacquire(session, study, released):
                return released
            _forgo(session, released)
        try:
            return _assign_next(session, study, rater)
        except IntegrityError:
            # A concurrent request of this same rater (a reload while the page was
            # loading) assigned this position first; serve what it assigned.
            session.rollback()
        except OperationalError as exc:
            # Chosen as a deadlock's victim among concurrent releases, exclusions and
            # assignments: nothing of this attempt was kept, so try again.
            if not is_retryable(exc):
                raise
            session.rollback()
    raise RuntimeError(f"could not assign a pair to rater {rater.id} after 5 attempts")


def _take_slot(session: Session, study: Study, pair_id: str, capped: bool, side: str | None = None) -> str | None:
    """Count one more live assignment of the pair; the side of method A it gets, or None when it is full.

    The side is ``side`` if given, else the side with fewer live assignments (ties: the
    alternation by k). Decided and counted in one guarded UPDATE, so concurrent raters
    get consistent sides.
    """
    if side is None:
        left = or_(SurveyPair.n_a_left < SurveyPair.n_a_right,
                   and_(SurveyPair.n_a_left == SurveyPair.n_a_right,
                        (SurveyPair.n_assigned % 2 == 0) == SurveyPair.a_left_first))
    else:
        left = true() if side == "left" else false()
    guard = [SurveyPair.id == pair_id]
    if capped:
        guard.append(_live() < study.raters_per_pair)
    return session.execute(
        update(SurveyPair).where(*guard)
        .values(n_assigned=SurveyPair.n_assigned + 1,
                n_a_left=SurveyPair.n_a_left + case((left, 1), else_=0),
                n_a_right=SurveyPair.n_a_right + case((left, 0), else_=1),
                last_a_side=case((left, "left"), else_="right"))
        .returning(SurveyPair.last_a_side)
        .execution_options(synchronize_session=False)).scalar_one_or_none()


def _give_back_slot(session: Session, pair_id: str, side: str) -> None:
    column = SurveyPair.n_a_left if side == "left" else SurveyPair.n_a_right
    session.execute(update(SurveyPair).where(SurveyPair.id == pair_id, column > 0)
                    .values({column: column - 1}).execution_options(synchronize_session=False))


def _assign_next(session: Session, study: Study, rater: Rater) -> Assignment | None:
    seen = set(session.scalars(select(Assignment.pair_id).where(Assignment.rater_id == rater.id)))
    position = len(seen) + 1
    if position > rater.planned:
        return None
    release_expired(session, study)
    pairs = session.execute(select(SurveyPair.id, SurveyPair.n_a_left, SurveyPair.n_a_right,
                                   SurveyPair.is_attention_check)
                            .where(SurveyPair.study_id == study.id)).all()
    live = {p.id: p.n_a_left + p.n_a_right for p in pairs}
    real = [p for p in pairs if not p.is_attention_check and p.id not in seen
            and live[p.id] < study.raters_per_pair]
    checks = [p for p in pairs if p.is_attention_check and p.id not in seen]
    real_seen = sum(1 for p in pairs if p.id in seen and not p.is_attention_check)
    if real_seen >= study.pairs_per_rater:
        real = []
    # A check at its planned position; otherwise a real pair; when the real pairs
    # have run out (caps), any remaining checks, then the end.
    preferred, fallback = (checks, real) if position in rater.check_positions else (real, checks)
    for group in (preferred, fallback):
        for p in sorted(group, key=lambda p: (live[p.id], rank(rater.order_seed, p.id))):
            side = _take_slot(session, study, p.id, capped=not p.is_attention_check)
            if side is None:  # filled up by another rater since we looked
                continue
            assignment = Assignment(id=uuid.uuid4().hex, study_id=study.id, rater_id=rater.id, pair_id=p.id,
                                    position=position, a_side=side, assigned_at=utcnow())
            session.add(assignment)
            session.commit()
            return assignment
    session.rollback()
    return None


# -- releasing slots ------------------------------------------------------------------------

def _release(session: Session, assignment_id: str, pair_id: str, side: str, *, unanswered_before=None) -> bool:
    """Mark one assignment released and give its slot back, in the caller's transaction."""
    guard = [Assignment.id == assignment_id, Assignment.released_at.is_(None)]
    if unanswered_before is not None:
        guard += [Assignment.answered_at.is_(None), Assignment.assigned_at < unanswered_before]
    res = session.execute(update(Assignment).where(*guard).values(released_at=utcnow())
                          .execution_options(synchronize_session=False))
    if res.rowcount != 1:
        return False
    _give_back_slot(session, pair_id, side)
    return True


def release_expired(session: Session, study: Study) -> int:
    """Release the study's assignments left unanswered past its time-out. Commits; returns how many.

    Many requests run this at once (whoever needs a pair, whoever reads the study): each release
    is its own transaction, holding one assignment row and then one pair row, so two of them can
    never wait for each other in a cycle (on PostgreSQL, releasing several in one transaction in
    different orders deadlocked).
    """
    cutoff = utcnow() - timedelta(seconds=study.assignment_timeout_seconds)
    stale = session.execute(select(Assignment.id, Assignment.pair_id, Assignment.a_side).where(
        Assignment.study_id == study.id, Assignment.answered_at.is_(None), Assignment.released_at.is_(None),
        Assignment.assigned_at < cutoff).order_by(Assignment.id)).all()
    n = 0
    for a in stale:
        try:
            n += _release(session, a.id, a.pair_id, a.a_side, unanswered_before=cutoff)
            session.commit()
        except OperationalError as exc:
            if not is_retryable(exc):
                raise
            session.rollback()  # still stale: the next caller releases it
    return n


def release_rater(session: Session, rater: Rater) -> int:
    """Give back every slot an excluded rater holds, answered or not. The caller commits.

    One pair per assignment of this rater, in a fixed order: no other transaction holds two of
    these rows while waiting for a third (see ``release_expired``).
    """
    held = session.execute(select(Assignment.id, Assignment.pair_id, Assignment.a_side).where(
        Assignment.rater_id == rater.id, Assignment.released_at.is_(None)).order_by(Assignment.id)).all()
    return sum(_release(session, a.id, a.pair_id, a.a_side) for a in held)


def restore_rater(session: Session, rater: Rater) -> int:
    """A rater included again: their answered assignments count again (even above the cap). The caller commits."""
    back = session.execute(select(Assignment.id, Assignment.pair_id, Assignment.a_side).where(
        Assignment.rater_id == rater.id, Assignment.released_at.is_not(None),
        Assignment.answered_at.is_not(None))).all()
    for a in back:
        session.execute(update(Assignment).where(Assignment.id == a.id).values(released_at=None)
                        .execution_options(synchronize_session=False))
        _take_slot(session, None, a.pair_id, capped=False, side=a.a_side)
    return len(back)


def reacquire(session: Session, study: Study, assignment: Assignment) -> bool:
    """A released, unanswered assignment taken back by its rater if the pair has room. Commits."""
    pair = session.get(SurveyPair, assignment.pair_id)
    side = _take_slot(session, study, assignment.pair_id, capped=not pair.is_attention_check,
                      side=assignment.a_side)
    if side is None:
        session.rollback()
        return False
    res = session.execute(update(Assignment).where(Assignment.id == assignment.id,
                                                   Assignment.released_at.is_not(None),
                                                   Assignment.answered_at.is_(None))
                          .values(released_at=None, assigned_at=utcnow())
                          .execution_options(synchronize_session=False))
    if res.rowcount != 1:
        session.rollback()
        return False
    session.commit()
    session.refresh(assignment)
    return True


def _forgo(session: Session, assignment: Assignment) -> None:
    """The released pair went to someone else: the rater's claim on it is dropped, and the next
    pair takes its place in their sequence (the row goes; nothing refers to an unanswered one). Commits."""
    session.execute(delete(Assignment).where(Assignment.id == assignment.id, Assignment.answered_at.is_(None),
                                             Assignment.released_at.is_not(None))
                    .execution_options(synchronize_session=False))
    session.commit()
    session.expire_all()


def mark_completed(session: Session, rater: Rater, outcome: str = "completed") -> None:
    if rater.completed_at is None:
        session.execute(update(Rater).where(Rater.id == rater.id, Rater.completed_at.is_(None))
                        .values(completed_at=utcnow(), outcome=outcome))
        session.commit()
        session.refresh(rater)
