"""Job-store tables: generation jobs, their images, and live workers.

The job table is the source of truth for the service, not the broker: a
message only says "look at job X". The CHECK, NOT NULL and UNIQUE
constraints below are the last line of defence; ``migrations/`` creates them.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, CheckConstraint, Float, ForeignKey, Index, Integer, String,
                        Text, UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from model_core.presets import get_preset
from worker.db import Base, UTCDateTime, utcnow

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
TERMINAL_STATUSES = ("succeeded", "failed", "canceled")
_status_list = ", ".join(f"'{s}'" for s in JOB_STATUSES)


class JobState:
    """The columns every job table shares, whatever it runs: ``worker.jobs`` drives them all with one set of
    guarded updates (claim, lease, progress, cancel, finish, the reaper's re-sends), so they are declared once."""

    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    progress_step: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


def job_checks() -> tuple[CheckConstraint, ...]:
    """The CHECKs on ``JobState``'s columns (new objects per table: a constraint belongs to one table)."""
    return (CheckConstraint(f"status IN ({_status_list})", name="status"),
            CheckConstraint("progress_step >= 0 AND progress_total >= 0", name="progress"))


class Job(JobState, Base):
    __tablename__ = "generation_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    preset: Mapped[str] = mapped_column(String(64), nullable=False)
    # "none", "vanilla", "robust", another classifier of the preset, or "pair".
    guidance: Mapped[str] = mapped_column(String(64), nullable=False)
    labels: Mapped[list[int]] = mapped_column(JSON, nullable=False)
    seeds: Mapped[list[int]] = mapped_column(JSON, nullable=False)
    # Resolved scale per method actually sampled ({} for guidance "none").
    scales: Mapped[dict[str, float]] = mapped_column(JSON, nullable=False)
    steps: Mapped[str] = mapped_column(String(64), nullable=False)
    # A name from model_core.sampling.registry, checked at the API edge (no CHECK: samplers are data).
    sampler: Mapped[str] = mapped_column(String(32), nullable=False)
    num_steps: Mapped[int] = mapped_column(Integer, nullable=False)
    num_images: Mapped[int] = mapped_column(Integer, nullable=False)
    # Intermediate predicted-x_0 pictures to keep per image ("previews": N; 0 keeps none). The database's
    # default, not the ORM's: a job without previews is inserted without the column.
    previews: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # Jobs with equal batch keys can share one sampling batch (see worker.runner).
    batch_key: Mapped[str] = mapped_column(String(64), nullable=False)

    owner_key_id: Mapped[str | None] = mapped_column(String(32))  # the API key that created it, if any
    # The survey study whose images this job makes, if any. Such jobs and their images are
    # never listed or served to the public (the raters must stay blind): see app.api.visibility.
    # No foreign key: a study and its jobs are written in one transaction, jobs first.
    study_id: Mapped[str | None] = mapped_column(String(32))
    idempotency_scope: Mapped[str | None] = mapped_column(String(40))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))

    images: Mapped[list["Image"]] = relationship(
        back_populates="job", order_by="(Image.position, Image.method)", cascade="all, delete-orphan")
    preview_images: Mapped[list["Preview"]] = relationship(
        order_by="(Preview.position, Preview.method, Preview.frame)", cascade="all, delete-orphan")

    __table_args__ = (
        *job_checks(),
        CheckConstraint("num_images >= 1", name="num_images"),
        CheckConstraint("num_steps >= 1", name="num_steps"),
        CheckConstraint("attempts >= 0", name="attempts"),
        CheckConstraint("previews >= 0", name="previews"),
        UniqueConstraint("idempotency_scope", "idempotency_key"),
        Index("ix_generation_jobs_status_batch", "status", "batch_key", "created_at"),
        Index("ix_generation_jobs_created", "created_at", "id"),
        Index("ix_generation_jobs_study", "study_id"),
    )

    # Server defaults (``previews``) are read when first used, not RETURNed by the INSERT: rows written before
    # the column existed (an older schema, in the migration tests) insert the same way.
    __mapper_args__ = {"eager_defaults": False}

    @property
    def methods(self) -> list[str]:
        """What the job samples per label; ``pair`` is its preset's comparison (``Preset.methods_for``)."""
        return list(get_preset(self.preset).methods_for(self.guidance))


class Image(Base):
    __tablename__ = "generation_images"

    # Derived from (job, position, method), so a task that runs twice names its rows the same.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("generation_jobs.id", ondelete="CASCADE"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)  # index into the job's labels
    method: Mapped[str] = mapped_column(String(64), nullable=False)
    label: Mapped[int] = mapped_column(Integer, nullable=False)
    class_name: Mapped[str] = mapped_column(String(255), nullable=False)
    seed: Mapped[int] = mapped_column(BigInteger, nullable=False)
    scale: Mapped[float] = mapped_column(Float, nullable=False)
    steps: Mapped[str] = mapped_column(String(64), nullable=False)
    sampler: Mapped[str] = mapped_column(String(32), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    path: Mapped[str] = mapped_column(String(255), nullable=False)  # relative to the media directory
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    channels: Mapped[int] = mapped_column(Integer, nullable=False)
    size_bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="images")

    __table_args__ = (
        UniqueConstraint("job_id", "position", "method"),
        CheckConstraint("position >= 0", name="position"),
        CheckConstraint("width > 0 AND height > 0 AND channels > 0", name="shape"),
        CheckConstraint("length(sha256) = 64", name="sha256"),
    )


class Preview(Base):
    """One intermediate picture of an image's trajectory: the predicted x_0 at one sampling step.

    ``model_core.analysis.trajectory.frame_steps`` picks the steps (uniformly
    spaced; the last frame is the image itself).
    """

    __tablename__ = "generation_previews"

    # Derived from (job, position, method, frame), as image ids are: a rerun writes the same rows.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("generation_jobs.id", ondelete="CASCADE"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    method: Mapped[str] = mapped_column(String(64), nullable=False)
    frame: Mapped[int] = mapped_column(Integer, nullable=False)      # 0 .. previews - 1
    step: Mapped[int] = mapped_column(Integer, nullable=False)       # sampling steps done, 1 .. num_steps
    timestep: Mapped[int] = mapped_column(Integer, nullable=False)   # the training timestep t of that step
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    path: Mapped[str] = mapped_column(String(255), nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

    __table_args__ = (
        UniqueConstraint("job_id", "position", "method", "frame"),
        CheckConstraint("frame >= 0 AND step >= 1", name="frame"),
        CheckConstraint("length(sha256) = 64", name="sha256"),
    )


class WorkerHeartbeat(Base):
    """One row per live worker process; ``/readyz`` counts the fresh ones."""

    __tablename__ = "service_workers"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    queue: Mapped[str] = mapped_column(String(255), nullable=False)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
