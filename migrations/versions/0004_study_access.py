"""Study access: admin keys, and grants of a study to keys other than its owner's.

Revision ID: 0004_study_access
Revises: 0003_sampler_as_data
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0004_study_access"
down_revision = "0003_sampler_as_data"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "survey_grants",
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("granted_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["survey_studies.id"], ondelete="CASCADE",
                                name=op.f("fk_survey_grants_study_id_survey_studies")),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], ondelete="CASCADE",
                                name=op.f("fk_survey_grants_key_id_api_keys")),
        sa.PrimaryKeyConstraint("study_id", "key_id", name=op.f("pk_survey_grants")),
    )


def downgrade() -> None:
    op.drop_table("survey_grants")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("is_admin")
