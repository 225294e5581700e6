"""Classification jobs: one uploaded image classified by a preset's defence (diffusion, vanilla or robust).

The diffusion classifier costs hundreds of network evaluations per image, so
every classification is a job (the same guarded state updates as generation
and analysis jobs: ``worker.jobs`` with ``model=ClassificationJob``); the
state columns carry the same names as ``worker.models.Job``'s.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from model_core.robustness.threats import DEFENCES
from worker.db import Base, UTCDateTime, utcnow
from worker.models import JOB_STATUSES

_status_list = ", ".join(f"'{s}'" for s in JOB_STATUSES)
_method_list = ", ".join(f"'{m}'" for m in DEFENCES)


class ClassificationJob(Base):
    __tablename__ = "classification_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    method: Mapped[str] = mapped_column(String(16), nullable=False)
    preset: Mapped[str] = mapped_column(String(64), nullable=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)     # schedule, seed (complete)
    image_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    image_path: Mapped[str] = mapped_column(String(255), nullable=False)       # in the media folder

    progress_step: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    owner_key_id: Mapped[str] = mapped_column(String(32), nullable=False)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(f"status IN ({_status_list})", name="status"),
        CheckConstraint(f"method IN ({_method_list})", name="method"),
        CheckConstraint("progress_step >= 0 AND progress_total >= 0", name="progress"),
        CheckConstraint("attempts >= 0", name="attempts"),
        Index("ix_classification_jobs_owner_created", "owner_key_id", "created_at", "id"),
        Index("ix_classification_jobs_status", "status", "created_at"),
    )
