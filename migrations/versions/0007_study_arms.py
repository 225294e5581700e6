"""Studies with more than two arms: the arms, the design, and the arm pair each pair row shows.

* studies: ``arms`` (JSON list of {name, method, scale, steps, sampler}; NULL for a
  classic two-arm study of method A against method B), ``design`` (one of
  ``model_core.designs.DESIGNS``; NULL for a classic study), ``reference_arm``
  (the reference design's arm) and ``pairs_per_item`` (the balanced incomplete
  design's arm pairs per item);
* pairs: ``arm_a`` and ``arm_b``, the two arms a pair row shows (``a_side`` is then
  the side of ``arm_a``); NULL in a classic study. An item (label and seed) has
  one pair row per arm pair of the design.

Revision ID: 0007_study_arms
Revises: 0006_analyses_and_previews
Create Date: 2026-12-06
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_study_arms"
down_revision = "0006_analyses_and_previews"
branch_labels = None
depends_on = None

DESIGNS = ("all_pairs", "reference", "balanced_incomplete")  # as model_core.designs.DESIGNS at this revision


def upgrade() -> None:
    designs = ", ".join(f"'{d}'" for d in DESIGNS)
    with op.batch_alter_table("survey_studies") as batch:
        batch.add_column(sa.Column("arms", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("design", sa.String(32), nullable=True))
        batch.add_column(sa.Column("reference_arm", sa.String(64), nullable=True))
        batch.add_column(sa.Column("pairs_per_item", sa.Integer(), nullable=True))
        batch.create_check_constraint(op.f("ck_survey_studies_design"), f"design IS NULL OR design IN ({designs})")
        batch.create_check_constraint(op.f("ck_survey_studies_arms_with_design"),
                                      "(arms IS NULL) = (design IS NULL)")
        batch.create_check_constraint(op.f("ck_survey_studies_pairs_per_item"),
                                      "pairs_per_item IS NULL OR pairs_per_item >= 1")
    with op.batch_alter_table("survey_pairs") as batch:
        batch.add_column(sa.Column("arm_a", sa.String(64), nullable=True))
        batch.add_column(sa.Column("arm_b", sa.String(64), nullable=True))
        batch.create_check_constraint(op.f("ck_survey_pairs_arms"),
                                      "(arm_a IS NULL AND arm_b IS NULL) OR "
                                      "(arm_a IS NOT NULL AND arm_b IS NOT NULL AND arm_a <> arm_b)")


def downgrade() -> None:
    conn = op.get_bind()
    # A multi-arm study cannot be stored in the two-arm schema; refuse rather than lose it.
    n = conn.execute(sa.text("SELECT COUNT(*) FROM survey_studies WHERE arms IS NOT NULL")).scalar()
    if n:
        raise RuntimeError(f"{n} multi-arm stud{'y is' if n == 1 else 'ies are'} stored; the schema before 0007 "
                           "cannot hold them")
    with op.batch_alter_table("survey_pairs") as batch:
        batch.drop_constraint(op.f("ck_survey_pairs_arms"), type_="check")
        batch.drop_column("arm_b")
        batch.drop_column("arm_a")
    with op.batch_alter_table("survey_studies") as batch:
        for name in ("pairs_per_item", "arms_with_design", "design"):
            batch.drop_constraint(op.f(f"ck_survey_studies_{name}"), type_="check")
        for column in ("pairs_per_item", "reference_arm", "design", "arms"):
            batch.drop_column(column)
