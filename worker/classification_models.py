"""Classification jobs: one uploaded image classified by a preset's defence (diffusion, vanilla or robust).

The diffusion classifier costs hundreds of network evaluations per image, so
every classification is a job (the same guarded state updates as generation
and analysis jobs: ``worker.jobs`` with ``model=ClassificationJob``); the
state columns are ``worker.models.JobState``'s, shared by every job table.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, CheckConstraint, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from model_core.robustness.threats import DEFENCES
from worker.db import Base
from worker.models import JobState, job_checks

_method_list = ", ".join(f"'{m}'" for m in DEFENCES)


class ClassificationJob(JobState, Base):
    __tablename__ = "classification_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    method: Mapped[str] = mapped_column(String(16), nullable=False)
    preset: Mapped[str] = mapped_column(String(64), nullable=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)     # schedule, seed (complete)
    image_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    image_path: Mapped[str] = mapped_column(String(255), nullable=False)       # in the media folder

    owner_key_id: Mapped[str] = mapped_column(String(32), nullable=False)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        *job_checks(),
        CheckConstraint(f"method IN ({_method_list})", name="method"),
        CheckConstraint("attempts >= 0", name="attempts"),
        Index("ix_classification_jobs_owner_created", "owner_key_id", "created_at", "id"),
        Index("ix_classification_jobs_status", "status", "created_at"),
    )
