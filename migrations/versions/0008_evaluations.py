"""Evaluations fanned out over the workers: ``evaluations`` and their ``evaluation_shards``.

A shard's state columns are a generation job's (the same guarded updates and
the reaper drive it); see ``worker.evaluation_models``.

Revision ID: 0008_evaluations
Revises: 0007_study_arms
Create Date: 2026-12-06
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_evaluations"
down_revision = "0007_study_arms"
branch_labels = None
depends_on = None

STATUSES = "'queued', 'running', 'succeeded', 'failed', 'canceled'"


def upgrade() -> None:
    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("preset", sa.String(64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("shard_size", sa.Integer(), nullable=False),
        sa.Column("num_shards", sa.Integer(), nullable=False),
        sa.Column("num_images", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("rows", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner_key_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("shard_size >= 1", name=op.f("ck_evaluations_shard_size")),
        sa.CheckConstraint("num_shards >= 1 AND num_images >= 1", name=op.f("ck_evaluations_sizes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
    )
    op.create_index("ix_evaluations_owner_created", "evaluations", ["owner_key_id", "created_at", "id"])
    op.create_table(
        "evaluation_shards",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("evaluation_id", sa.String(32), nullable=False),
        sa.Column("row_index", sa.Integer(), nullable=False),
        sa.Column("start", sa.Integer(), nullable=False),
        sa.Column("stop", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress_step", sa.Integer(), nullable=False),
        sa.Column("progress_total", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(), nullable=True),
        sa.Column("computed", sa.Integer(), nullable=False),
        sa.Column("file", sa.String(255), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_evaluation_shards_status")),
        sa.CheckConstraint("progress_step >= 0 AND progress_total >= 0", name=op.f("ck_evaluation_shards_progress")),
        sa.CheckConstraint("start >= 0 AND stop > start", name=op.f("ck_evaluation_shards_range")),
        sa.CheckConstraint("attempts >= 0 AND computed >= 0", name=op.f("ck_evaluation_shards_counts")),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluations.id"], ondelete="CASCADE",
                                name=op.f("fk_evaluation_shards_evaluation_id_evaluations")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluation_shards")),
    )
    op.create_index("ix_evaluation_shards_evaluation", "evaluation_shards", ["evaluation_id", "row_index", "start"],
                    unique=True)
    op.create_index("ix_evaluation_shards_status", "evaluation_shards", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_evaluation_shards_status", table_name="evaluation_shards")
    op.drop_index("ix_evaluation_shards_evaluation", table_name="evaluation_shards")
    op.drop_table("evaluation_shards")
    op.drop_index("ix_evaluations_owner_created", table_name="evaluations")
    op.drop_table("evaluations")
