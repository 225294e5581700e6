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

from typing import Any

from sqlalchemy import JSON, CheckConstraint, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from worker.db import Base
from worker.models import JobState, job_checks


class RobustnessJob(JobState, Base):
    __tablename__ = "robustness_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    preset: Mapped[str] = mapped_column(String(64), nullable=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)     # the complete ReportConfig

    owner_key_id: Mapped[str] = mapped_column(String(32), nullable=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)               # {"report": ..., "per_sample": ...}
    markdown: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        *job_checks(),
        CheckConstraint("attempts >= 0", name="attempts"),
        UniqueConstraint("owner_key_id", "idempotency_key"),
        Index("ix_robustness_jobs_owner_created", "owner_key_id", "created_at", "id"),
        Index("ix_robustness_jobs_status", "status", "created_at"),
    )
