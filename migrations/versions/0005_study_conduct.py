"""Running a study on a crowd platform: blinding beyond the page, exits, rater quality, amendments.

* ``generation_jobs.study_id``: the study whose images a job makes (backfilled
  from ``survey_studies.job_ids``), so the public generation API can leave
  those jobs and images out;
* studies: the platform, a code/URL per exit, the completion redirect, the
  assignment time-out, the attention-check kind, the per-rater flag
  thresholds, which flags exclude, and the log of changes after opening;
  studies made before this migration keep their identical-image checks;
* pairs: the check's kind and passing answer, live assignments per side;
* raters: MTurk as a source, its submit host, the outcome, exclusion;
* assignments: when a slot was released.

Revision ID: 0005_study_conduct
Revises: 0004_study_access
Create Date: 2026-12-08
"""
from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0005_study_conduct"
down_revision = "0004_study_access"
branch_labels = None
depends_on = None


def _job_ids(value) -> list[str]:
    if isinstance(value, str):
        value = json.loads(value)
    return list(value or [])


def upgrade() -> None:
    with op.batch_alter_table("generation_jobs") as batch:
        batch.add_column(sa.Column("study_id", sa.String(32), nullable=True))
        batch.create_index("ix_generation_jobs_study", ["study_id"])

    with op.batch_alter_table("survey_studies") as batch:
        batch.add_column(sa.Column("platform", sa.String(16), nullable=False, server_default="none"))
        batch.add_column(sa.Column("exit_codes", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("completion_redirect", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("assignment_timeout_seconds", sa.Integer(), nullable=False,
                                   server_default="3600"))
        batch.add_column(sa.Column("check_kind", sa.String(16), nullable=False, server_default="identical"))
        batch.add_column(sa.Column("flag_same_share", sa.Float(), nullable=False, server_default="0.8"))
        batch.add_column(sa.Column("flag_fast_share", sa.Float(), nullable=False, server_default="0.25"))
        batch.add_column(sa.Column("flag_min_answers", sa.Integer(), nullable=False, server_default="6"))
        batch.add_column(sa.Column("exclude_flags", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("amendments", sa.JSON(), nullable=True))
        batch.create_check_constraint(op.f("ck_survey_studies_platform"), "platform IN ('none', 'prolific', 'mturk')")
        batch.create_check_constraint(op.f("ck_survey_studies_check_kind"),
                                      "check_kind IN ('instructed', 'identical')")
        batch.create_check_constraint(op.f("ck_survey_studies_assignment_timeout"), "assignment_timeout_seconds >= 1")

    with op.batch_alter_table("survey_pairs") as batch:
        batch.add_column(sa.Column("check_kind", sa.String(16), nullable=True))
        batch.add_column(sa.Column("check_answer", sa.String(5), nullable=True))
        batch.add_column(sa.Column("n_a_left", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("n_a_right", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_a_side", sa.String(5), nullable=True))
        batch.create_check_constraint(op.f("ck_survey_pairs_live_sides"), "n_a_left >= 0 AND n_a_right >= 0")

    with op.batch_alter_table("survey_raters") as batch:
        batch.add_column(sa.Column("submit_to", sa.String(255), nullable=True))
        batch.add_column(sa.Column("outcome", sa.String(32), nullable=True))
        batch.add_column(sa.Column("excluded_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("exclusion_reason", sa.String(255), nullable=True))
        batch.drop_constraint(op.f("ck_survey_raters_source"), type_="check")
        batch.create_check_constraint(op.f("ck_survey_raters_source"), "source IN ('prolific', 'mturk', 'anonymous')")

    with op.batch_alter_table("survey_assignments") as batch:
        batch.add_column(sa.Column("released_at", sa.DateTime(), nullable=True))

    # Data: existing studies' jobs belong to them; existing checks are identical-image checks
    # answered by "same"; every existing assignment is live.
    conn = op.get_bind()
    studies = sa.table("survey_studies", sa.column("id", sa.String), sa.column("job_ids", sa.JSON),
                       sa.column("exit_codes", sa.JSON), sa.column("exclude_flags", sa.JSON),
                       sa.column("amendments", sa.JSON))
    jobs = sa.table("generation_jobs", sa.column("id", sa.String), sa.column("study_id", sa.String))
    for study_id, job_ids in conn.execute(sa.select(studies.c.id, studies.c.job_ids)).all():
        ids = _job_ids(job_ids)
        if ids:
            conn.execute(jobs.update().where(jobs.c.id.in_(ids)).values(study_id=study_id))
    conn.execute(studies.update().values(exit_codes={}, exclude_flags=[], amendments=[]))
    conn.execute(sa.text("UPDATE survey_pairs SET check_kind = 'identical', check_answer = 'same' "
                         "WHERE is_attention_check = :t"), {"t": True})
    conn.execute(sa.text(
        "UPDATE survey_pairs SET "
        "n_a_left = (SELECT COUNT(*) FROM survey_assignments a WHERE a.pair_id = survey_pairs.id "
        "            AND a.a_side = 'left'), "
        "n_a_right = (SELECT COUNT(*) FROM survey_assignments a WHERE a.pair_id = survey_pairs.id "
        "             AND a.a_side = 'right')"))

    for table, column in (("survey_studies", "exit_codes"), ("survey_studies", "exclude_flags"),
                          ("survey_studies", "amendments")):
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    conn = op.get_bind()
    # Raters from MTurk cannot be stored in the old schema; refuse rather than lose them.
    n = conn.execute(sa.text("SELECT COUNT(*) FROM survey_raters WHERE source = 'mturk'")).scalar()
    if n:
        raise RuntimeError(f"{n} MTurk rater(s) are stored; the schema before 0005 cannot hold them")
    with op.batch_alter_table("survey_assignments") as batch:
        batch.drop_column("released_at")
    with op.batch_alter_table("survey_raters") as batch:
        batch.drop_constraint(op.f("ck_survey_raters_source"), type_="check")
        batch.create_check_constraint(op.f("ck_survey_raters_source"), "source IN ('prolific', 'anonymous')")
        for column in ("exclusion_reason", "excluded_at", "outcome", "submit_to"):
            batch.drop_column(column)
    with op.batch_alter_table("survey_pairs") as batch:
        batch.drop_constraint(op.f("ck_survey_pairs_live_sides"), type_="check")
        for column in ("last_a_side", "n_a_right", "n_a_left", "check_answer", "check_kind"):
            batch.drop_column(column)
    with op.batch_alter_table("survey_studies") as batch:
        for name in ("assignment_timeout", "check_kind", "platform"):
            batch.drop_constraint(op.f(f"ck_survey_studies_{name}"), type_="check")
        for column in ("amendments", "exclude_flags", "flag_min_answers", "flag_fast_share", "flag_same_share",
                       "check_kind", "assignment_timeout_seconds", "completion_redirect", "exit_codes", "platform"):
            batch.drop_column(column)
    with op.batch_alter_table("generation_jobs") as batch:
        batch.drop_index("ix_generation_jobs_study")
        batch.drop_column("study_id")
