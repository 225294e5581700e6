"""Analysis jobs: gradient maps, class maximisation, trajectories, sheets and sweeps run for a researcher key.

One row per job. Its life (queued, running under a lease, succeeded, failed,
canceled; progress; attempts; the reaper's re-sends) is a generation job's,
kept by the same guarded updates (``worker.jobs``, ``model=AnalysisJob``);
the state columns therefore carry the same names as ``worker.models.Job``'s.

``settings`` are the resolver's (``model_core.analysis.requests``), complete;
``inputs`` the uploaded images (normalised PNGs in the media folder, by
sha256); ``result`` the sidecar the run wrote and ``files`` the media paths
of its PNGs and tables.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from worker.db import Base, UTCDateTime, utcnow
from worker.models import JOB_STATUSES

_status_list = ", ".join(f"'{s}'" for s in JOB_STATUSES)


class AnalysisJob(Base):
    __tablename__ = "analysis_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    # A name from model_core.analysis.kinds, checked at the edge (no CHECK: kinds are data, as samplers).
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    preset: Mapped[str] = mapped_column(String(64), nullable=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    num_images: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

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
    files: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(f"status IN ({_status_list})", name="status"),
        CheckConstraint("progress_step >= 0 AND progress_total >= 0", name="progress"),
        CheckConstraint("num_images >= 0", name="num_images"),
        CheckConstraint("attempts >= 0", name="attempts"),
        Index("ix_analysis_jobs_owner_created", "owner_key_id", "created_at", "id"),
        Index("ix_analysis_jobs_status", "status", "created_at"),
    )
