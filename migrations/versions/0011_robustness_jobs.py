"""Robustness-report jobs: a preset's defences under attack, run on a worker with progress and cancel.

Revision ID: 0011_robustness_jobs
Revises: 0010_machine_votes
Create Date: 2026-12-06
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_robustness_jobs"
down_revision = "0010_machine_votes"
branch_labels = None
depends_on = None

STATUSES = "'queued', 'running', 'succeeded', 'failed', 'canceled'"


def upgrade() -> None:
    op.create_table(
        "robustness_jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("preset", sa.String(64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("progress_step", sa.Integer(), nullable=False),
        sa.Column("progress_total", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(), nullable=True),
        sa.Column("owner_key_id", sa.String(32), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("markdown", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_robustness_jobs_status")),
        sa.CheckConstraint("progress_step >= 0 AND progress_total >= 0", name=op.f("ck_robustness_jobs_progress")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_robustness_jobs_attempts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_robustness_jobs")),
        sa.UniqueConstraint("owner_key_id", "idempotency_key",
                            name=op.f("uq_robustness_jobs_owner_key_id_idempotency_key")),
    )
    op.create_index("ix_robustness_jobs_owner_created", "robustness_jobs", ["owner_key_id", "created_at", "id"])
    op.create_index("ix_robustness_jobs_status", "robustness_jobs", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_robustness_jobs_status", table_name="robustness_jobs")
    op.drop_index("ix_robustness_jobs_owner_created", table_name="robustness_jobs")
    op.drop_table("robustness_jobs")
