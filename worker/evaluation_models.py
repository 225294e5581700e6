"""Evaluations run by the workers: one row per evaluation, one row per shard (torch-free).

An **evaluation** holds the resolved settings, the plan (rows, images per row)
and, as rows complete, their merged metrics (``rows``, keyed by the plan's
row index) and finally the report (``result``). Its status is not stored: it
follows from its shards (:func:`worker.evaluation_jobs.status_of`).

A **shard** is a contiguous range of one row's images; it is a job like a
generation or an analysis (queued, running under a lease, succeeded, failed,
canceled; progress; attempts; the reaper's re-sends), driven by the same
guarded updates (``worker.jobs``, ``model=EvaluationShard``), so the state
columns carry a generation job's names. ``computed`` counts the runs that
sampled the shard to the end (a rerun after a lost worker that finds the
shard's file reuses it and does not count), ``file`` is its samples and
features in the media folder.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from worker.db import Base, UTCDateTime, utcnow
from worker.models import JobState, job_checks


class Evaluation(Base):
    __tablename__ = "evaluations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    preset: Mapped[str] = mapped_column(String(64), nullable=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    shard_size: Mapped[int] = mapped_column(Integer, nullable=False)
    num_shards: Mapped[int] = mapped_column(Integer, nullable=False)
    num_images: Mapped[int] = mapped_column(Integer, nullable=False)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    rows: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    owner_key_id: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("shard_size >= 1", name="shard_size"),
        CheckConstraint("num_shards >= 1 AND num_images >= 1", name="sizes"),
        Index("ix_evaluations_owner_created", "owner_key_id", "created_at", "id"),
    )


class EvaluationShard(JobState, Base):
    __tablename__ = "evaluation_shards"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    evaluation_id: Mapped[str] = mapped_column(String(32), ForeignKey("evaluations.id", ondelete="CASCADE"),
                                               nullable=False)
    row_index: Mapped[int] = mapped_column(Integer, nullable=False)
    start: Mapped[int] = mapped_column(Integer, nullable=False)
    stop: Mapped[int] = mapped_column(Integer, nullable=False)

    computed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    file: Mapped[str | None] = mapped_column(String(255))
    seconds: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(128))  # the lease owner that completed it

    __table_args__ = (
        *job_checks(),
        CheckConstraint("start >= 0 AND stop > start", name="range"),
        CheckConstraint("attempts >= 0 AND computed >= 0", name="counts"),
        Index("ix_evaluation_shards_evaluation", "evaluation_id", "row_index", "start", unique=True),
        Index("ix_evaluation_shards_status", "status", "created_at"),
    )
