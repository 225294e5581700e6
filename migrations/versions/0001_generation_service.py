"""Generation service: jobs, images, live workers, API keys.

Revision ID: 0001_generation_service
Revises:
Create Date: 2025-11-21
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_generation_service"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = "'queued', 'running', 'succeeded', 'failed', 'canceled'"


def upgrade() -> None:
    op.create_table(
        "generation_jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("preset", sa.String(64), nullable=False),
        sa.Column("guidance", sa.String(64), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("seeds", sa.JSON(), nullable=False),
        sa.Column("scales", sa.JSON(), nullable=False),
        sa.Column("steps", sa.String(64), nullable=False),
        sa.Column("sampler", sa.String(8), nullable=False),
        sa.Column("num_steps", sa.Integer(), nullable=False),
        sa.Column("num_images", sa.Integer(), nullable=False),
        sa.Column("batch_key", sa.String(64), nullable=False),
        sa.Column("progress_step", sa.Integer(), nullable=False),
        sa.Column("progress_total", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(), nullable=True),
        sa.Column("owner_key_id", sa.String(32), nullable=True),
        sa.Column("idempotency_scope", sa.String(40), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_generation_jobs_status")),
        sa.CheckConstraint("progress_step >= 0 AND progress_total >= 0", name=op.f("ck_generation_jobs_progress")),
        sa.CheckConstraint("num_images >= 1", name=op.f("ck_generation_jobs_num_images")),
        sa.CheckConstraint("num_steps >= 1", name=op.f("ck_generation_jobs_num_steps")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_generation_jobs_attempts")),
        sa.CheckConstraint("sampler IN ('ddpm', 'ddim')", name=op.f("ck_generation_jobs_sampler")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generation_jobs")),
        sa.UniqueConstraint("idempotency_scope", "idempotency_key",
                            name=op.f("uq_generation_jobs_idempotency_scope_idempotency_key")),
    )
    op.create_index("ix_generation_jobs_status_batch", "generation_jobs", ["status", "batch_key", "created_at"])
    op.create_index("ix_generation_jobs_created", "generation_jobs", ["created_at", "id"])

    op.create_table(
        "generation_images",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("class_name", sa.String(255), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("scale", sa.Float(), nullable=False),
        sa.Column("steps", sa.String(64), nullable=False),
        sa.Column("sampler", sa.String(8), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("channels", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("position >= 0", name=op.f("ck_generation_images_position")),
        sa.CheckConstraint("width > 0 AND height > 0 AND channels > 0", name=op.f("ck_generation_images_shape")),
        sa.CheckConstraint("length(sha256) = 64", name=op.f("ck_generation_images_sha256")),
        sa.ForeignKeyConstraint(["job_id"], ["generation_jobs.id"], ondelete="CASCADE",
                                name=op.f("fk_generation_images_job_id_generation_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generation_images")),
        sa.UniqueConstraint("job_id", "position", "method",
                            name=op.f("uq_generation_images_job_id_position_method")),
    )

    op.create_table(
        "service_workers",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_workers")),
    )

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("service_workers")
    op.drop_table("generation_images")
    op.drop_index("ix_generation_jobs_created", table_name="generation_jobs")
    op.drop_index("ix_generation_jobs_status_batch", table_name="generation_jobs")
    op.drop_table("generation_jobs")
