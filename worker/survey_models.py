"""Survey tables: studies, their seed-matched pairs, raters, assignments and votes.

A study's pairs are made by ordinary generation jobs (``worker.models.Job``);
a pair row points at the job slot(s) that produce its two images and, once
the study opens, at the image rows themselves.

The constraints are the survey's guarantees, not just hygiene:

* ``UNIQUE(rater_id, pair_id)`` on votes: one answer per rater and pair, so a
  double click or a replayed POST cannot store a second vote;
* ``UNIQUE(rater_id, pair_id)`` and ``UNIQUE(rater_id, position)`` on
  assignments: a pair is shown to a rater once, at one place in their sequence;
* a vote references its assignment (``UNIQUE(assignment_id)``), so a vote
  for a pair that was never assigned to that rater cannot exist;
* ``UNIQUE(study_id, external_id)`` on raters: a crowd-platform participant is
  one rater per study however often they come back.

Migration ``0002_survey`` creates these tables; this module is what the code
uses. Torch-free: the API imports it.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from worker.db import Base, UTCDateTime, utcnow

STUDY_STATUSES = ("generating", "open", "closed", "failed")
SIDES = ("left", "right")
ANSWERS = ("left", "right", "same")
SAME = "same"
_statuses = ", ".join(f"'{s}'" for s in STUDY_STATUSES)


class Study(Base):
    __tablename__ = "survey_studies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="generating")
    owner_key_id: Mapped[str | None] = mapped_column(String(32))

    # What is compared: method A (the paper's robust, s=1.0) against method B (vanilla, s=0.5).
    preset: Mapped[str] = mapped_column(String(64), nullable=False)
    method_a: Mapped[str] = mapped_column(String(64), nullable=False)
    scale_a: Mapped[float] = mapped_column(Float, nullable=False)
    method_b: Mapped[str] = mapped_column(String(64), nullable=False)
    scale_b: Mapped[float] = mapped_column(Float, nullable=False)
    steps: Mapped[str] = mapped_column(String(64), nullable=False)
    sampler: Mapped[str] = mapped_column(String(32), nullable=False)
    seed: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # "random" (labels drawn with the study seed) or "explicit" (the researcher's list).
    label_source: Mapped[str] = mapped_column(String(16), nullable=False)

    question: Mapped[str] = mapped_column(Text, nullable=False)
    instructions: Mapped[str] = mapped_column(Text, nullable=False)
    consent: Mapped[str] = mapped_column(Text, nullable=False)
    raters_per_pair: Mapped[int] = mapped_column(Integer, nullable=False)  # per-pair cap on assignments
    pairs_per_rater: Mapped[int] = mapped_column(Integer, nullable=False)  # per-rater cap on real pairs
    attention_checks: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # check pairs per rater
    max_attention_failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    min_answer_ms: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    completion_code: Mapped[str] = mapped_column(String(64), nullable=False)
    completion_url: Mapped[str | None] = mapped_column(String(500))
    # Signs this study's rater cookies and CSRF tokens; never leaves the server.
    secret: Mapped[str] = mapped_column(String(64), nullable=False)

    code_version: Mapped[str] = mapped_column(String(100), nullable=False)
    job_ids: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    # Frozen when the study opens: nothing writes these columns afterwards.
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    pairs: Mapped[list[SurveyPair]] = relationship(back_populates="study", order_by="SurveyPair.ordinal",
                                                     cascade="all, delete-orphan")

    __table_args__ = (
        CheckConstraint(f"status IN ({_statuses})", name="status"),
        CheckConstraint("raters_per_pair >= 1", name="raters_per_pair"),
        CheckConstraint("pairs_per_rater >= 1", name="pairs_per_rater"),
        CheckConstraint("attention_checks >= 0", name="attention_checks"),
        CheckConstraint("max_attention_failures >= 0", name="max_attention_failures"),
        CheckConstraint("min_answer_ms >= 0", name="min_answer_ms"),
        CheckConstraint("method_a <> method_b", name="methods_differ"),
        Index("ix_survey_studies_created", "created_at", "id"),
    )

    @property
    def methods(self) -> tuple[str, str]:
        return (self.method_a, self.method_b)


class SurveyPair(Base):
    """One item raters judge: two images of the same label and seed (or one image twice, for a check)."""

    __tablename__ = "survey_pairs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("survey_studies.id", ondelete="CASCADE"), nullable=False)
    ordinal: Mapped[int] = mapped_column(Integer, nullable=False)  # 0.. real pairs, then the checks
    label: Mapped[int] = mapped_column(Integer, nullable=False)
    class_name: Mapped[str] = mapped_column(String(255), nullable=False)
    seed: Mapped[int] = mapped_column(BigInteger, nullable=False)
    is_attention_check: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # Where the images come from: a job slot per method (one "pair" job holds both).
    job_a_id: Mapped[str] = mapped_column(String(32), nullable=False)
    job_b_id: Mapped[str] = mapped_column(String(32), nullable=False)
    job_position: Mapped[int] = mapped_column(Integer, nullable=False)
    # For an attention check: the method whose image is shown on both sides.
    check_method: Mapped[str | None] = mapped_column(String(64))
    # Filled when the study opens.
    image_a_id: Mapped[str | None] = mapped_column(ForeignKey("generation_images.id"))
    image_b_id: Mapped[str | None] = mapped_column(ForeignKey("generation_images.id"))
    image_a_sha256: Mapped[str | None] = mapped_column(String(64))
    image_b_sha256: Mapped[str | None] = mapped_column(String(64))
    # Assignments handed out so far: the per-pair cap, the "least answered first"
    # order and the left/right alternation all read this one counter, which is
    # only ever changed by a guarded UPDATE ... RETURNING (see app.survey.assign).
    n_assigned: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Whether method A goes left for the pair's even-numbered assignments; drawn per pair
    # so that the first rater of every pair does not see A on the same side.
    a_left_first: Mapped[bool] = mapped_column(Boolean, nullable=False)

    study: Mapped[Study] = relationship(back_populates="pairs")

    __table_args__ = (
        UniqueConstraint("study_id", "ordinal"),
        CheckConstraint("n_assigned >= 0", name="n_assigned"),
        CheckConstraint("ordinal >= 0", name="ordinal"),
    )


class Rater(Base):
    __tablename__ = "survey_raters"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("survey_studies.id", ondelete="CASCADE"), nullable=False)
    # "prolific:<PROLIFIC_PID>" or "anon:<browser id>": who this is, as the platform knows them.
    external_id: Mapped[str] = mapped_column(String(255), nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)  # "prolific" or "anonymous"
    platform_study_id: Mapped[str | None] = mapped_column(String(255))
    platform_session_id: Mapped[str | None] = mapped_column(String(255))
    # The random id held (signed) in this rater's cookie.
    browser_id: Mapped[str] = mapped_column(String(64), nullable=False)
    # Ranks pairs for this rater among equally-answered ones: their own random order, reproducible.
    order_seed: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Positions (1-based) in this rater's sequence at which attention checks are shown.
    check_positions: Mapped[list[int]] = mapped_column(JSON, nullable=False)
    planned: Mapped[int] = mapped_column(Integer, nullable=False)  # pairs (checks included) this rater will see
    user_agent: Mapped[str | None] = mapped_column(String(500))
    consented_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("study_id", "external_id"),
        Index("ix_survey_raters_browser", "study_id", "browser_id"),
        CheckConstraint("source IN ('prolific', 'anonymous')", name="source"),
        CheckConstraint("planned >= 0", name="planned"),
    )


class Assignment(Base):
    """Pair ``pair_id`` shown to ``rater_id`` as item ``position`` of their sequence, A on ``a_side``."""

    __tablename__ = "survey_assignments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("survey_studies.id", ondelete="CASCADE"), nullable=False)
    rater_id: Mapped[str] = mapped_column(ForeignKey("survey_raters.id", ondelete="CASCADE"), nullable=False)
    pair_id: Mapped[str] = mapped_column(ForeignKey("survey_pairs.id", ondelete="CASCADE"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)  # 1-based
    a_side: Mapped[str] = mapped_column(String(5), nullable=False)  # where method A's image is shown
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("rater_id", "pair_id"),
        UniqueConstraint("rater_id", "position"),
        CheckConstraint("a_side IN ('left', 'right')", name="a_side"),
        CheckConstraint("position >= 1", name="position"),
    )


class SurveyVote(Base):
    __tablename__ = "survey_votes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("survey_studies.id", ondelete="CASCADE"), nullable=False)
    rater_id: Mapped[str] = mapped_column(ForeignKey("survey_raters.id", ondelete="CASCADE"), nullable=False)
    pair_id: Mapped[str] = mapped_column(ForeignKey("survey_pairs.id", ondelete="CASCADE"), nullable=False)
    assignment_id: Mapped[str] = mapped_column(ForeignKey("survey_assignments.id", ondelete="CASCADE"),
                                               nullable=False)
    side: Mapped[str] = mapped_column(String(5), nullable=False)    # what was clicked: left, right, same
    choice: Mapped[str] = mapped_column(String(64), nullable=False)  # the method chosen, or "same"
    a_side: Mapped[str] = mapped_column(String(5), nullable=False)  # copied: a vote reads on its own
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    # Time to answer: measured in the browser from the images being shown (JavaScript), and on
    # the server from handing out the assignment (always there, includes network and reloads).
    client_ms: Mapped[float | None] = mapped_column(Float)
    server_ms: Mapped[float] = mapped_column(Float, nullable=False)
    # True: the browser reported both images loaded; None: unknown (no JavaScript).
    images_loaded: Mapped[bool | None] = mapped_column(Boolean)
    load_ms: Mapped[float | None] = mapped_column(Float)
    input: Mapped[str] = mapped_column(String(8), nullable=False)  # click, key or form (no JavaScript)
    too_fast: Mapped[bool] = mapped_column(Boolean, nullable=False)
    is_attention_check: Mapped[bool] = mapped_column(Boolean, nullable=False)
    attention_passed: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

    __table_args__ = (
        UniqueConstraint("rater_id", "pair_id"),
        UniqueConstraint("assignment_id"),
        CheckConstraint("side IN ('left', 'right', 'same')", name="side"),
        CheckConstraint("a_side IN ('left', 'right')", name="a_side"),
        CheckConstraint("input IN ('click', 'key', 'form')", name="input"),
        CheckConstraint("server_ms >= 0", name="server_ms"),
        Index("ix_survey_votes_study", "study_id", "created_at"),
    )

    @property
    def response_ms(self) -> float:
        """The browser's measurement when there is one (no network time in it), else the server's."""
        return self.client_ms if self.client_ms is not None else self.server_ms


class StudyGrant(Base):
    """Access to a study for a key other than its owner's (``rguide keys grant``)."""
    __tablename__ = "survey_grants"

    study_id: Mapped[str] = mapped_column(ForeignKey("survey_studies.id", ondelete="CASCADE"), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
