"""Robustness-report jobs: a preset's three defences under attack (``model_core.robustness.report``) on a worker.

A report runs for minutes to hours (the diffusion classifier costs hundreds
of network evaluations per prediction and per attack gradient), so it is a
job like an analysis or a classification: the same guarded state updates
(``worker.jobs`` with ``model=RobustnessJob``), the same state column names,
progress and cancel. ``settings`` is the complete ``ReportConfig``;
``result`` the report JSON and its per-sample results, ``markdown`` the
rendered report. ``idempotency_key`` with ``request_hash`` makes a repeated
POST return the first job (keys are scoped to the API key that created it).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from worker.db import Base, UTCDateTime, utcnow
from worker.models import JOB_STATUSES

_status_list = ", ".join(f"'{s}'" for s in JOB_STATUSES)


class RobustnessJob(Base):
    __tablename__ = "robustness_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    preset: Mapped[str] = mapped_column(String(64), nullable=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)     # the complete ReportConfig

    progress_step: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    owner_key_id: Mapped[str] = mapped_column(String(32), nullable=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)               # {"report": ..., "per_sample": ...}
    markdown: Mapped[str | None] = mapped_column(Text)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(f"status IN ({_status_list})", name="status"),
        CheckConstraint("progress_step >= 0 AND progress_total >= 0", name="progress"),
        CheckConstraint("attempts >= 0", name="attempts"),
        UniqueConstraint("owner_key_id", "idempotency_key"),
        Index("ix_robustness_jobs_owner_created", "owner_key_id", "created_at", "id"),
        Index("ix_robustness_jobs_status", "status", "created_at"),
    )
