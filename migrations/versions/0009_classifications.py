"""Classification jobs: an uploaded image classified by the diffusion model or a classifier at t = 0.

Revision ID: 0009_classifications
Revises: 0008_evaluations
Create Date: 2026-12-06
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_classifications"
down_revision = "0008_evaluations"
branch_labels = None
depends_on = None

STATUSES = "'queued', 'running', 'succeeded', 'failed', 'canceled'"
METHODS = "'vanilla', 'robust', 'diffusion'"   # model_core.robustness.threats.DEFENCES at the time


def upgrade() -> None:
    op.create_table(
        "classification_jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("preset", sa.String(64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("image_path", sa.String(255), nullable=False),
        sa.Column("progress_step", sa.Integer(), nullable=False),
        sa.Column("progress_total", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(), nullable=True),
        sa.Column("owner_key_id", sa.String(32), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_classification_jobs_status")),
        sa.CheckConstraint(f"method IN ({METHODS})", name=op.f("ck_classification_jobs_method")),
        sa.CheckConstraint("progress_step >= 0 AND progress_total >= 0",
                           name=op.f("ck_classification_jobs_progress")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_classification_jobs_attempts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_classification_jobs")),
    )
    op.create_index("ix_classification_jobs_owner_created", "classification_jobs",
                    ["owner_key_id", "created_at", "id"])
    op.create_index("ix_classification_jobs_status", "classification_jobs", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_classification_jobs_status", table_name="classification_jobs")
    op.drop_index("ix_classification_jobs_owner_created", table_name="classification_jobs")
    op.drop_table("classification_jobs")
