"""Samplers are data: no CHECK on generation_jobs.sampler, sampler columns of 32 characters.

The samplers are listed once, in ``model_core.sampling.registry``; the API
and the survey refuse unknown names at the edge. A CHECK listing the names
would have to be migrated for every new sampler, so it goes; the columns take
any registered name (the registry allows 32 characters).

Batch mode rebuilds the tables on SQLite (which cannot drop a constraint or
change a column type in place) and issues plain ALTERs on PostgreSQL.

Revision ID: 0003_sampler_as_data
Revises: 0002_survey
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_sampler_as_data"
down_revision = "0002_survey"
branch_labels = None
depends_on = None

TABLES = ("generation_jobs", "generation_images", "survey_studies")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            if table == "generation_jobs":
                batch.drop_constraint(op.f("ck_generation_jobs_sampler"), type_="check")
            batch.alter_column("sampler", existing_type=sa.String(8), type_=sa.String(32), existing_nullable=False)


def downgrade() -> None:
    # Fails, as it should, while rows hold a sampler that the old schema cannot store.
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column("sampler", existing_type=sa.String(32), type_=sa.String(8), existing_nullable=False)
            if table == "generation_jobs":
                batch.create_check_constraint(op.f("ck_generation_jobs_sampler"), "sampler IN ('ddpm', 'ddim')")
