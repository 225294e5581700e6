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

from typing import Any

from sqlalchemy import JSON, CheckConstraint, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from worker.db import Base
from worker.models import JobState, job_checks


class AnalysisJob(JobState, Base):
    __tablename__ = "analysis_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # A name from model_core.analysis.kinds, checked at the edge (no CHECK: kinds are data, as samplers).
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    preset: Mapped[str] = mapped_column(String(64), nullable=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    num_images: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    owner_key_id: Mapped[str] = mapped_column(String(32), nullable=False)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    files: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)

    __table_args__ = (
        *job_checks(),
        CheckConstraint("num_images >= 0", name="num_images"),
        CheckConstraint("attempts >= 0", name="attempts"),
        Index("ix_analysis_jobs_owner_created", "owner_key_id", "created_at", "id"),
        Index("ix_analysis_jobs_status", "status", "created_at"),
    )
