"""Analysis jobs (gradient maps, class maximisation, trajectories, sheets, sweeps) and generation previews.

* ``analysis_jobs``: one row per analysis a researcher key asked for; the
  state columns are a generation job's (the same guarded updates drive both).
* ``generation_jobs.previews``: how many intermediate predicted-x_0 pictures
  to keep per image (0 for every existing job).
* ``generation_previews``: those pictures, one row per (job, image, frame).

Revision ID: 0006_analyses_and_previews
Revises: 0005_study_conduct
Create Date: 2026-12-06
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_analyses_and_previews"
down_revision = "0005_study_conduct"
branch_labels = None
depends_on = None

STATUSES = "'queued', 'running', 'succeeded', 'failed', 'canceled'"


def upgrade() -> None:
    op.create_table(
        "analysis_jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("preset", sa.String(64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("num_images", sa.Integer(), nullable=False),
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
        sa.Column("files", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_analysis_jobs_status")),
        sa.CheckConstraint("progress_step >= 0 AND progress_total >= 0", name=op.f("ck_analysis_jobs_progress")),
        sa.CheckConstraint("num_images >= 0", name=op.f("ck_analysis_jobs_num_images")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_analysis_jobs_attempts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analysis_jobs")),
    )
    op.create_index("ix_analysis_jobs_owner_created", "analysis_jobs", ["owner_key_id", "created_at", "id"])
    op.create_index("ix_analysis_jobs_status", "analysis_jobs", ["status", "created_at"])

    with op.batch_alter_table("generation_jobs") as batch:
        batch.add_column(sa.Column("previews", sa.Integer(), nullable=False, server_default="0"))
        batch.create_check_constraint("previews", "previews >= 0")

    op.create_table(
        "generation_previews",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("frame", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("timestep", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("frame >= 0 AND step >= 1", name=op.f("ck_generation_previews_frame")),
        sa.CheckConstraint("length(sha256) = 64", name=op.f("ck_generation_previews_sha256")),
        sa.ForeignKeyConstraint(["job_id"], ["generation_jobs.id"], ondelete="CASCADE",
                                name=op.f("fk_generation_previews_job_id_generation_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generation_previews")),
        sa.UniqueConstraint("job_id", "position", "method", "frame",
                            name=op.f("uq_generation_previews_job_id_position_method_frame")),
    )


def downgrade() -> None:
    op.drop_table("generation_previews")
    with op.batch_alter_table("generation_jobs") as batch:
        batch.drop_constraint(op.f("ck_generation_jobs_previews"), type_="check")
        batch.drop_column("previews")
    op.drop_index("ix_analysis_jobs_status", table_name="analysis_jobs")
    op.drop_index("ix_analysis_jobs_owner_created", table_name="analysis_jobs")
    op.drop_table("analysis_jobs")
