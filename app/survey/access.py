"""Which researcher key may see and run which study: the one rule every researcher endpoint applies.

A study belongs to the key that created it. A key sees its own studies,
those granted to it (``rguide keys grant STUDY KEY``), and, if it is an admin
key (``rguide keys create --admin``), all of them. Any other study answers
as if it did not exist (404), so ids cannot be probed for existence.
Studies created before keys owned them (no owner) are the admins'.

The same rule guards a study's generation jobs and images in the public
generation API (``job_visible``): they are how a rater would unblind the
pairs (the originals' PNG text chunks name the method), so they are listed
and served only to keys that may see the study. Raters see a study's images
only through their own assignments (``app.survey.pages``), stripped of
metadata.
"""
from __future__ import annotations

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app.keys import ApiKey
from worker.models import Job
from worker.survey_models import Study, StudyGrant


def visible_to(key: ApiKey) -> ColumnElement[bool] | None:
    """A WHERE clause for the studies ``key`` may see; None means all of them."""
    if key.is_admin:
        return None
    granted = exists().where(StudyGrant.study_id == Study.id, StudyGrant.key_id == key.id)
    return or_(Study.owner_key_id == key.id, granted)


def can_see(session: Session, key: ApiKey, study: Study) -> bool:
    if key.is_admin or study.owner_key_id == key.id:
        return True
    return session.get(StudyGrant, (study.id, key.id)) is not None


def grant(session: Session, study: Study, key: ApiKey) -> bool:
    """Give ``key`` access to ``study``; False if it had it already."""
    if can_see(session, key, study):
        return False
    session.add(StudyGrant(study_id=study.id, key_id=key.id))
    session.flush()
    return True


def revoke_grant(session: Session, study: Study, key: ApiKey) -> bool:
    row = session.get(StudyGrant, (study.id, key.id))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def studies_query(key: ApiKey, limit: int):
    stmt = select(Study).order_by(Study.created_at.desc(), Study.id.desc()).limit(limit)
    where = visible_to(key)
    return stmt if where is None else stmt.where(where)


def can_see_study_id(session: Session, key: ApiKey | None, study_id: str) -> bool:
    """Whether ``key`` may see the study ``study_id`` (a study deleted since: admins only)."""
    if key is None:
        return False
    study = session.get(Study, study_id)
    if study is None:
        return key.is_admin
    return can_see(session, key, study)


def job_visible(session: Session, key: ApiKey | None, job: Job, *, requires_key: bool) -> bool:
    """Whether the generation API may show ``job`` (and serve its images) to ``key`` (None: no key).

    A study's job: only to keys that may see the study. Any other job: to
    everyone, or only to its owner when the server requires keys for generation.
    """
    if job.study_id is not None:
        return can_see_study_id(session, key, job.study_id)
    if requires_key:
        return key is not None and job.owner_key_id == key.id
    return True
