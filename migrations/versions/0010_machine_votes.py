"""The machine-rater pilot on a study: its jobs, its votes (a table of their own), and the creation option.

* ``survey_studies.machine_pilot``: the judge settings asked for when the study was created (NULL: none);
* ``survey_machine_jobs``: one run of the machine judge over a study's pairs, with a generation job's
  state columns (lease, attempts, progress, cancel);
* ``survey_machine_votes``: one row per (pair, machine rater): the answer in the human votes' vocabulary,
  the judge's two utilities, its settings, its weights' sha256 and the code version. Kept apart from
  ``survey_votes`` so that the human statistics cannot read them.

Revision ID: 0010_machine_votes
Revises: 0009_classifications
Create Date: 2026-12-06
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_machine_votes"
down_revision = "0009_classifications"
branch_labels = None
depends_on = None

STATUSES = "'queued', 'running', 'succeeded', 'failed', 'canceled'"  # worker.models.JOB_STATUSES at the time


def upgrade() -> None:
    with op.batch_alter_table("survey_studies") as batch:
        batch.add_column(sa.Column("machine_pilot", sa.JSON(), nullable=True))
    op.create_table(
        "survey_machine_jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("settings_sha256", sa.String(64), nullable=False),
        sa.Column("progress_step", sa.Integer(), nullable=False),
        sa.Column("progress_total", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(), nullable=True),
        sa.Column("owner_key_id", sa.String(32), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_survey_machine_jobs_status")),
        sa.CheckConstraint("progress_step >= 0 AND progress_total >= 0", name=op.f("ck_survey_machine_jobs_progress")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_survey_machine_jobs_attempts")),
        sa.ForeignKeyConstraint(["study_id"], ["survey_studies.id"], ondelete="CASCADE",
                                name=op.f("fk_survey_machine_jobs_study_id_survey_studies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_machine_jobs")),
    )
    op.create_index("ix_survey_machine_jobs_study", "survey_machine_jobs", ["study_id", "created_at"])
    op.create_index("ix_survey_machine_jobs_status", "survey_machine_jobs", ["status", "created_at"])
    op.create_table(
        "survey_machine_votes",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("pair_id", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("rater", sa.String(32), nullable=False),
        sa.Column("side", sa.String(5), nullable=False),
        sa.Column("choice", sa.String(64), nullable=False),
        sa.Column("a_side", sa.String(5), nullable=False),
        sa.Column("u_a", sa.Float(), nullable=False),
        sa.Column("u_b", sa.Float(), nullable=False),
        sa.Column("judge", sa.JSON(), nullable=False),
        sa.Column("judge_sha256", sa.String(64), nullable=False),
        sa.Column("code_version", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("side IN ('left', 'right', 'same')", name=op.f("ck_survey_machine_votes_side")),
        sa.CheckConstraint("a_side IN ('left', 'right')", name=op.f("ck_survey_machine_votes_a_side")),
        sa.CheckConstraint("rater LIKE 'machine-%'", name=op.f("ck_survey_machine_votes_rater")),
        sa.ForeignKeyConstraint(["study_id"], ["survey_studies.id"], ondelete="CASCADE",
                                name=op.f("fk_survey_machine_votes_study_id_survey_studies")),
        sa.ForeignKeyConstraint(["pair_id"], ["survey_pairs.id"], ondelete="CASCADE",
                                name=op.f("fk_survey_machine_votes_pair_id_survey_pairs")),
        sa.ForeignKeyConstraint(["job_id"], ["survey_machine_jobs.id"], ondelete="CASCADE",
                                name=op.f("fk_survey_machine_votes_job_id_survey_machine_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_machine_votes")),
        sa.UniqueConstraint("pair_id", "rater", name=op.f("uq_survey_machine_votes_pair_id_rater")),
    )
    op.create_index("ix_survey_machine_votes_study", "survey_machine_votes", ["study_id"])


def downgrade() -> None:
    op.drop_index("ix_survey_machine_votes_study", table_name="survey_machine_votes")
    op.drop_table("survey_machine_votes")
    op.drop_index("ix_survey_machine_jobs_status", table_name="survey_machine_jobs")
    op.drop_index("ix_survey_machine_jobs_study", table_name="survey_machine_jobs")
    op.drop_table("survey_machine_jobs")
    with op.batch_alter_table("survey_studies") as batch:
        batch.drop_column("machine_pilot")
