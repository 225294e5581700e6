"""Human-evaluation survey: studies, pairs, raters, assignments, votes.

Revision ID: 0002_survey
Revises: 0001_generation_service
Create Date: 2025-11-21
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_survey"
down_revision = "0001_generation_service"
branch_labels = None
depends_on = None


def _fk(table: str, column: str, target: str, ondelete: str | None = "CASCADE") -> sa.ForeignKeyConstraint:
    ref_table = target.split(".")[0]
    return sa.ForeignKeyConstraint([column], [target], ondelete=ondelete,
                                   name=op.f(f"fk_{table}_{column}_{ref_table}"))


def upgrade() -> None:
    op.create_table(
        "survey_studies",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("owner_key_id", sa.String(32), nullable=True),
        sa.Column("preset", sa.String(64), nullable=False),
        sa.Column("method_a", sa.String(64), nullable=False),
        sa.Column("scale_a", sa.Float(), nullable=False),
        sa.Column("method_b", sa.String(64), nullable=False),
        sa.Column("scale_b", sa.Float(), nullable=False),
        sa.Column("steps", sa.String(64), nullable=False),
        sa.Column("sampler", sa.String(8), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("label_source", sa.String(16), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("consent", sa.Text(), nullable=False),
        sa.Column("raters_per_pair", sa.Integer(), nullable=False),
        sa.Column("pairs_per_rater", sa.Integer(), nullable=False),
        sa.Column("attention_checks", sa.Integer(), nullable=False),
        sa.Column("max_attention_failures", sa.Integer(), nullable=False),
        sa.Column("min_answer_ms", sa.Integer(), nullable=False),
        sa.Column("completion_code", sa.String(64), nullable=False),
        sa.Column("completion_url", sa.String(500), nullable=True),
        sa.Column("secret", sa.String(64), nullable=False),
        sa.Column("code_version", sa.String(100), nullable=False),
        sa.Column("job_ids", sa.JSON(), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=True),
        sa.Column("manifest_sha256", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("opened_at", sa.DateTime(), nullable=True),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("status IN ('generating', 'open', 'closed', 'failed')",
                           name=op.f("ck_survey_studies_status")),
        sa.CheckConstraint("raters_per_pair >= 1", name=op.f("ck_survey_studies_raters_per_pair")),
        sa.CheckConstraint("pairs_per_rater >= 1", name=op.f("ck_survey_studies_pairs_per_rater")),
        sa.CheckConstraint("attention_checks >= 0", name=op.f("ck_survey_studies_attention_checks")),
        sa.CheckConstraint("max_attention_failures >= 0", name=op.f("ck_survey_studies_max_attention_failures")),
        sa.CheckConstraint("min_answer_ms >= 0", name=op.f("ck_survey_studies_min_answer_ms")),
        sa.CheckConstraint("method_a <> method_b", name=op.f("ck_survey_studies_methods_differ")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_studies")),
    )
    op.create_index("ix_survey_studies_created", "survey_studies", ["created_at", "id"])

    op.create_table(
        "survey_pairs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("class_name", sa.String(255), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("is_attention_check", sa.Boolean(), nullable=False),
        sa.Column("job_a_id", sa.String(32), nullable=False),
        sa.Column("job_b_id", sa.String(32), nullable=False),
        sa.Column("job_position", sa.Integer(), nullable=False),
        sa.Column("check_method", sa.String(64), nullable=True),
        sa.Column("image_a_id", sa.String(32), nullable=True),
        sa.Column("image_b_id", sa.String(32), nullable=True),
        sa.Column("image_a_sha256", sa.String(64), nullable=True),
        sa.Column("image_b_sha256", sa.String(64), nullable=True),
        sa.Column("n_assigned", sa.Integer(), nullable=False),
        sa.Column("a_left_first", sa.Boolean(), nullable=False),
        sa.CheckConstraint("n_assigned >= 0", name=op.f("ck_survey_pairs_n_assigned")),
        sa.CheckConstraint("ordinal >= 0", name=op.f("ck_survey_pairs_ordinal")),
        _fk("survey_pairs", "study_id", "survey_studies.id"),
        _fk("survey_pairs", "image_a_id", "generation_images.id", ondelete=None),
        _fk("survey_pairs", "image_b_id", "generation_images.id", ondelete=None),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_pairs")),
        sa.UniqueConstraint("study_id", "ordinal", name=op.f("uq_survey_pairs_study_id_ordinal")),
    )

    op.create_table(
        "survey_raters",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("platform_study_id", sa.String(255), nullable=True),
        sa.Column("platform_session_id", sa.String(255), nullable=True),
        sa.Column("browser_id", sa.String(64), nullable=False),
        sa.Column("order_seed", sa.BigInteger(), nullable=False),
        sa.Column("check_positions", sa.JSON(), nullable=False),
        sa.Column("planned", sa.Integer(), nullable=False),
        sa.Column("user_agent", sa.String(500), nullable=True),
        sa.Column("consented_at", sa.DateTime(), nullable=False),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("source IN ('prolific', 'anonymous')", name=op.f("ck_survey_raters_source")),
        sa.CheckConstraint("planned >= 0", name=op.f("ck_survey_raters_planned")),
        _fk("survey_raters", "study_id", "survey_studies.id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_raters")),
        sa.UniqueConstraint("study_id", "external_id", name=op.f("uq_survey_raters_study_id_external_id")),
    )
    op.create_index("ix_survey_raters_browser", "survey_raters", ["study_id", "browser_id"])

    op.create_table(
        "survey_assignments",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("rater_id", sa.String(32), nullable=False),
        sa.Column("pair_id", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("a_side", sa.String(5), nullable=False),
        sa.Column("assigned_at", sa.DateTime(), nullable=False),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("a_side IN ('left', 'right')", name=op.f("ck_survey_assignments_a_side")),
        sa.CheckConstraint("position >= 1", name=op.f("ck_survey_assignments_position")),
        _fk("survey_assignments", "study_id", "survey_studies.id"),
        _fk("survey_assignments", "rater_id", "survey_raters.id"),
        _fk("survey_assignments", "pair_id", "survey_pairs.id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_assignments")),
        sa.UniqueConstraint("rater_id", "pair_id", name=op.f("uq_survey_assignments_rater_id_pair_id")),
        sa.UniqueConstraint("rater_id", "position", name=op.f("uq_survey_assignments_rater_id_position")),
    )

    op.create_table(
        "survey_votes",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("rater_id", sa.String(32), nullable=False),
        sa.Column("pair_id", sa.String(32), nullable=False),
        sa.Column("assignment_id", sa.String(32), nullable=False),
        sa.Column("side", sa.String(5), nullable=False),
        sa.Column("choice", sa.String(64), nullable=False),
        sa.Column("a_side", sa.String(5), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("client_ms", sa.Float(), nullable=True),
        sa.Column("server_ms", sa.Float(), nullable=False),
        sa.Column("images_loaded", sa.Boolean(), nullable=True),
        sa.Column("load_ms", sa.Float(), nullable=True),
        sa.Column("input", sa.String(8), nullable=False),
        sa.Column("too_fast", sa.Boolean(), nullable=False),
        sa.Column("is_attention_check", sa.Boolean(), nullable=False),
        sa.Column("attention_passed", sa.Boolean(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("side IN ('left', 'right', 'same')", name=op.f("ck_survey_votes_side")),
        sa.CheckConstraint("a_side IN ('left', 'right')", name=op.f("ck_survey_votes_a_side")),
        sa.CheckConstraint("input IN ('click', 'key', 'form')", name=op.f("ck_survey_votes_input")),
        sa.CheckConstraint("server_ms >= 0", name=op.f("ck_survey_votes_server_ms")),
        _fk("survey_votes", "study_id", "survey_studies.id"),
        _fk("survey_votes", "rater_id", "survey_raters.id"),
        _fk("survey_votes", "pair_id", "survey_pairs.id"),
        _fk("survey_votes", "assignment_id", "survey_assignments.id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_votes")),
        sa.UniqueConstraint("rater_id", "pair_id", name=op.f("uq_survey_votes_rater_id_pair_id")),
        sa.UniqueConstraint("assignment_id", name=op.f("uq_survey_votes_assignment_id")),
    )
    op.create_index("ix_survey_votes_study", "survey_votes", ["study_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_survey_votes_study", table_name="survey_votes")
    op.drop_table("survey_votes")
    op.drop_table("survey_assignments")
    op.drop_index("ix_survey_raters_browser", table_name="survey_raters")
    op.drop_table("survey_raters")
    op.drop_table("survey_pairs")
    op.drop_index("ix_survey_studies_created", table_name="survey_studies")
    op.drop_table("survey_studies")
