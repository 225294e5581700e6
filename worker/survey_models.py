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

Machine votes (the machine-rater pilot, docs/pilot.md) live in a table of
their own, ``survey_machine_votes``, written only by machine-vote jobs
(``survey_machine_jobs``); nothing that reads ``survey_votes`` reads it, so the
human statistics, exports and reports cannot mix them in.

Migrations ``0002_survey``, ``0004_study_access``, ``0005_study_conduct`` and
``0010_machine_votes`` create these tables; this module is what the code uses. Torch-free: the API imports it.
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
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from model_core.designs import DESIGNS
from worker.db import Base, UTCDateTime, utcnow
from worker.models import JobState, job_checks

STUDY_STATUSES = ("generating", "open", "closed", "failed")
# Where raters come from: decides the ids read from the link, the exit links and the framing policy.
PLATFORMS = ("none", "prolific", "mturk")
RATER_SOURCES = ("prolific", "mturk", "anonymous")
# Attention checks: "instructed" pairs say which side to pick; "identical" pairs show one image twice.
CHECK_KINDS = ("instructed", "identical")
SIDES = ("left", "right")
ANSWERS = ("left", "right", "same")
SAME = "same"
_statuses = ", ".join(f"'{s}'" for s in STUDY_STATUSES)
_platforms = ", ".join(f"'{s}'" for s in PLATFORMS)
_sources = ", ".join(f"'{s}'" for s in RATER_SOURCES)
_check_kinds = ", ".join(f"'{s}'" for s in CHECK_KINDS)
_designs = ", ".join(f"'{s}'" for s in DESIGNS)


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
    # A study of more than two arms (app.survey.arms): [{name, method, scale, steps, sampler}, ...] and
    # which arm pairs each item shows (model_core.designs). NULL for a classic study of A against B,
    # whose method_a/method_b columns then say everything; in a multi-arm study they hold the first two arms.
    arms: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))
    design: Mapped[str | None] = mapped_column(String(32))
    reference_arm: Mapped[str | None] = mapped_column(String(64))
    pairs_per_item: Mapped[int | None] = mapped_column(Integer)
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
    # How raters arrive and leave (app.survey.exits): the platform, a code and/or URL for every
    # other way out (outcome -> {"code": ..., "url": ...}), and whether finishing redirects at once.
    platform: Mapped[str] = mapped_column(String(16), nullable=False, default="none", server_default="none")
    exit_codes: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    completion_redirect: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                                      server_default=false())
    # Rater quality (app.survey.quality): an unanswered pair goes back to the pool after this long;
    # the kind of attention check; the thresholds of the per-rater flags and which flags exclude.
    assignment_timeout_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=3600,
                                                            server_default="3600")
    check_kind: Mapped[str] = mapped_column(String(16), nullable=False, default="instructed",
                                            server_default="identical")
    flag_same_share: Mapped[float] = mapped_column(Float, nullable=False, default=0.8, server_default="0.8")
    flag_fast_share: Mapped[float] = mapped_column(Float, nullable=False, default=0.25, server_default="0.25")
    flag_min_answers: Mapped[int] = mapped_column(Integer, nullable=False, default=6, server_default="6")
    exclude_flags: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    # What the researcher changed after the manifest was frozen (caps raised, reopened, data
    # deleted on request): [{"at": ..., "action": ..., ...}]. The report lists them.
    amendments: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    # The machine-rater pilot asked for at creation ({raters, noise, same_margin, realism_weight, k, seed}):
    # queued as a machine-vote job when the study opens. NULL: none asked for (one can still be run later).
    machine_pilot: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
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
        CheckConstraint(f"platform IN ({_platforms})", name="platform"),
        CheckConstraint(f"check_kind IN ({_check_kinds})", name="check_kind"),
        CheckConstraint("assignment_timeout_seconds >= 1", name="assignment_timeout"),
        CheckConstraint(f"design IS NULL OR design IN ({_designs})", name="design"),
        CheckConstraint("(arms IS NULL) = (design IS NULL)", name="arms_with_design"),
        CheckConstraint("pairs_per_item IS NULL OR pairs_per_item >= 1", name="pairs_per_item"),
        Index("ix_survey_studies_created", "created_at", "id"),
    )

    @property
    def methods(self) -> tuple[str, str]:
        return (self.method_a, self.method_b)

    @property
    def multi_arm(self) -> bool:
        return self.arms is not None

    @property
    def arm_names(self) -> list[str]:
        """The arms' names in the study's order (a classic study: its two methods)."""
        return [a["name"] for a in self.arms] if self.arms is not None else [self.method_a, self.method_b]


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
    # A multi-arm study: the two arms this row shows (job_a_id makes arm_a's image, job_b_id arm_b's);
    # "A" below then means arm_a. NULL in a classic study (A and B are the study's two methods).
    arm_a: Mapped[str | None] = mapped_column(String(64))
    arm_b: Mapped[str | None] = mapped_column(String(64))
    # For an attention check: its kind, the answer that passes it (left, right or same) and,
    # for an "identical" check, the method whose image is shown on both sides.
    check_kind: Mapped[str | None] = mapped_column(String(16))
    check_answer: Mapped[str | None] = mapped_column(String(5))
    check_method: Mapped[str | None] = mapped_column(String(64))
    # Filled when the study opens.
    image_a_id: Mapped[str | None] = mapped_column(ForeignKey("generation_images.id"))
    image_b_id: Mapped[str | None] = mapped_column(ForeignKey("generation_images.id"))
    image_a_sha256: Mapped[str | None] = mapped_column(String(64))
    image_b_sha256: Mapped[str | None] = mapped_column(String(64))
    # Assignments ever handed out (k of the alternation), and the live ones per side of
    # method A: an assignment released (abandoned past the time-out, or its rater excluded)
    # no longer counts. The per-pair cap and "least assigned first" read n_a_left + n_a_right;
    # a new assignment takes the side with fewer live ones (ties: the alternation by k). Only
    # a guarded UPDATE ... RETURNING changes them (see app.survey.assign).
    n_assigned: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    n_a_left: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    n_a_right: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    last_a_side: Mapped[str | None] = mapped_column(String(5))  # the side the last UPDATE gave out
    # Whether method A goes left for the pair's even-numbered assignments; drawn per pair
    # so that the first rater of every pair does not see A on the same side.
    a_left_first: Mapped[bool] = mapped_column(Boolean, nullable=False)

    study: Mapped[Study] = relationship(back_populates="pairs")

    __table_args__ = (
        UniqueConstraint("study_id", "ordinal"),
        CheckConstraint("n_assigned >= 0", name="n_assigned"),
        CheckConstraint("n_a_left >= 0 AND n_a_right >= 0", name="live_sides"),
        CheckConstraint("ordinal >= 0", name="ordinal"),
        CheckConstraint("(arm_a IS NULL AND arm_b IS NULL) OR "
                        "(arm_a IS NOT NULL AND arm_b IS NOT NULL AND arm_a <> arm_b)", name="arms"),
    )


class Rater(Base):
    __tablename__ = "survey_raters"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("survey_studies.id", ondelete="CASCADE"), nullable=False)
    # "prolific:<PROLIFIC_PID>", "mturk:<workerId>" or "anon:<browser id>": who this is, as the platform knows them.
    external_id: Mapped[str] = mapped_column(String(255), nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)  # RATER_SOURCES
    # Prolific: STUDY_ID and SESSION_ID; MTurk: hitId and assignmentId.
    platform_study_id: Mapped[str | None] = mapped_column(String(255))
    platform_session_id: Mapped[str | None] = mapped_column(String(255))
    # MTurk: the turkSubmitTo origin (one of the configured MTurk hosts) the HIT is submitted to.
    submit_to: Mapped[str | None] = mapped_column(String(255))
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
    # How their session ended (app.survey.exits: completed, failed_checks, no_pairs, closed_midway).
    outcome: Mapped[str | None] = mapped_column(String(32))
    # Left out of the statistics (and their slots released): when, and why (app.survey.quality).
    excluded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    exclusion_reason: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        UniqueConstraint("study_id", "external_id"),
        Index("ix_survey_raters_browser", "study_id", "browser_id"),
        CheckConstraint(f"source IN ({_sources})", name="source"),
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
    # Its slot given back: unanswered past the study's time-out, or its rater excluded.
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

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


class MachineVoteJob(JobState, Base):
    """One run of the machine judge over a study's pairs (``worker.machine_vote_runner``).

    Its life (queued, running under a lease, finished; progress; the reaper's re-sends) is a generation
    job's, kept by ``worker.jobs`` with ``model=MachineVoteJob``: the state columns carry the same names.
    ``settings`` are the judge's (``model_core.evaluation.judge.JudgeSettings``), complete;
    ``settings_sha256`` identifies them, so a repeated request finds the run it repeats.
    """

    __tablename__ = "survey_machine_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("survey_studies.id", ondelete="CASCADE"), nullable=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    settings_sha256: Mapped[str] = mapped_column(String(64), nullable=False)

    owner_key_id: Mapped[str | None] = mapped_column(String(32))
    # Per arm: label accuracy, share inside the real manifold, mean utility; the judge's file and sha256.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        *job_checks(),
        CheckConstraint("attempts >= 0", name="attempts"),
        Index("ix_survey_machine_jobs_study", "study_id", "created_at"),
        Index("ix_survey_machine_jobs_status", "status", "created_at"),
    )


class MachineVote(Base):
    """One simulated machine rater's answer about one real pair: never a human vote, never in their statistics.

    ``side``/``choice``/``a_side`` read as a human vote's (``choice`` names the pair's arm A or B, or
    "same"); ``u_a`` and ``u_b`` are the judge's utilities of A's and B's image. The id is derived from
    (pair, rater), so a re-run of the job writes the same rows and ``UNIQUE(pair_id, rater)`` keeps one.
    """

    __tablename__ = "survey_machine_votes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("survey_studies.id", ondelete="CASCADE"), nullable=False)
    pair_id: Mapped[str] = mapped_column(ForeignKey("survey_pairs.id", ondelete="CASCADE"), nullable=False)
    job_id: Mapped[str] = mapped_column(ForeignKey("survey_machine_jobs.id", ondelete="CASCADE"), nullable=False)
    rater: Mapped[str] = mapped_column(String(32), nullable=False)   # machine-01, machine-02, ...
    side: Mapped[str] = mapped_column(String(5), nullable=False)     # the side "clicked": left, right, same
    choice: Mapped[str] = mapped_column(String(64), nullable=False)  # the arm chosen, or "same"
    a_side: Mapped[str] = mapped_column(String(5), nullable=False)   # where A's image was "shown"
    u_a: Mapped[float] = mapped_column(Float, nullable=False)
    u_b: Mapped[float] = mapped_column(Float, nullable=False)
    judge: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)   # the judge settings
    judge_sha256: Mapped[str] = mapped_column(String(64), nullable=False)  # of the judge network's weights
    code_version: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

    __table_args__ = (
        UniqueConstraint("pair_id", "rater"),
        CheckConstraint("side IN ('left', 'right', 'same')", name="side"),
        CheckConstraint("a_side IN ('left', 'right')", name="a_side"),
        CheckConstraint("rater LIKE 'machine-%'", name="rater"),
        Index("ix_survey_machine_votes_study", "study_id"),
    )


class StudyGrant(Base):
    """Access to a study for a key other than its owner's (``rguide keys grant``)."""
    __tablename__ = "survey_grants"

    study_id: Mapped[str] = mapped_column(ForeignKey("survey_studies.id", ondelete="CASCADE"), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
