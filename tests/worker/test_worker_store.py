"""The job store's guarded transitions, constraints and migrations (SQLite, and PostgreSQL when available)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError

from worker import db, jobs
from worker.models import Image, Job

SPEC = jobs.JobSpec(preset="tiny", guidance="pair", labels=(0, 3), seeds=(10, 11),
                    scales={"robust": 1.0, "vanilla": 0.5}, steps="10", sampler="ddpm", num_steps=10)


@pytest.fixture
def Session(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    db.upgrade(url)
    yield db.session_factory(url)
    db.dispose_engines()


def _expire(session, job_id):
    session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=db.utcnow() - timedelta(seconds=1)))
    session.commit()


def test_spec_counts_images_and_batches_by_loop_settings():
    assert SPEC.num_images == 4 and SPEC.methods == ["robust", "vanilla"]
    other = jobs.JobSpec("tiny", "none", (1,), (5,), {}, "10", "ddpm", 10)
    assert other.batch_key == SPEC.batch_key  # labels, seeds and methods are per trajectory
    assert jobs.JobSpec("tiny", "none", (1,), (5,), {}, "20", "ddpm", 20).batch_key != SPEC.batch_key


def test_claim_is_exclusive_and_a_dead_lease_can_be_taken_over(Session):
    with Session() as s:
        job, created = jobs.create_job(s, SPEC)
        assert created and job.status == "queued" and job.progress_total == 10
        first = jobs.claim(s, job.id, "w1", lease_seconds=30, max_attempts=3)
        assert first is not None and first.status == "running" and first.attempts == 1
        assert jobs.claim(s, job.id, "w2", lease_seconds=30, max_attempts=3) is None  # held by a live lease
        _expire(s, job.id)
        second = jobs.claim(s, job.id, "w2", lease_seconds=30, max_attempts=3)
        assert second is not None and second.lease_owner == "w2" and second.attempts == 2
        # The old owner's progress and failure no longer touch the job.
        jobs.record_progress(s, [job.id], "w1", 5, 10)
        jobs.finish_failed(s, [job.id], "w1", "late")
        s.refresh(second)
        assert second.status == "running" and second.progress_step == 0 and second.error is None


def test_claim_gives_up_after_max_attempts(Session):
    with Session() as s:
        job, _ = jobs.create_job(s, SPEC)
        for _ in range(2):
            assert jobs.claim(s, job.id, "w", 30, max_attempts=2) is not None
            _expire(s, job.id)
        assert jobs.claim(s, job.id, "w", 30, max_attempts=2) is None
        s.refresh(job)
        assert job.status == "failed" and "2 attempts" in job.error


def test_companions_share_a_batch_up_to_the_image_cap(Session):
    with Session() as s:
        leader, _ = jobs.create_job(s, SPEC)                                          # 4 images
        same = [jobs.create_job(s, jobs.JobSpec("tiny", "robust", (i,), (i,), {"robust": 1.0}, "10", "ddpm", 10))[0]
                for i in range(3)]                                                     # 1 image each
        other_steps, _ = jobs.create_job(s, jobs.JobSpec("tiny", "none", (0,), (0,), {}, "20", "ddpm", 20))
        leader = jobs.claim(s, leader.id, "w", 30, 3)
        got = jobs.claim_companions(s, leader, "w", 30, max_images=6)
        assert [j.id for j in got] == [same[0].id, same[1].id]                       # oldest first, 4+1+1 = 6
        assert all(j.status == "running" and j.lease_owner == "w" for j in got)
        assert s.get(Job, other_steps.id).status == "queued"
        assert s.get(Job, same[2].id).status == "queued"


def test_cancel_queued_at_once_running_cooperatively_finished_refused(Session):
    with Session() as s:
        queued, _ = jobs.create_job(s, SPEC)
        assert jobs.request_cancel(s, queued.id).status == "canceled"
        assert jobs.claim(s, queued.id, "w", 30, 3) is None
        running, _ = jobs.create_job(s, SPEC)
        jobs.claim(s, running.id, "w", 30, 3)
        job = jobs.request_cancel(s, running.id)
        assert job.status == "running" and job.cancel_requested
        assert jobs.record_progress(s, [running.id], "w", 3, 10) == {running.id}
        assert jobs.complete(s, running.id, []) is False  # a canceled job does not become succeeded
        done, _ = jobs.create_job(s, SPEC)
        jobs.claim(s, done.id, "w", 30, 3)
        assert jobs.complete(s, done.id, [])
        with pytest.raises(jobs.JobStateError, match="already succeeded"):
            jobs.request_cancel(s, done.id)


def test_reaper_requeues_lost_work_and_resends_undelivered_jobs(Session):
    with Session() as s:
        lost, _ = jobs.create_job(s, SPEC)
        jobs.claim(s, lost.id, "dead", 30, 3)
        _expire(s, lost.id)
        lost_canceling, _ = jobs.create_job(s, SPEC)
        jobs.claim(s, lost_canceling.id, "dead", 30, 3)
        jobs.request_cancel(s, lost_canceling.id)
        _expire(s, lost_canceling.id)
        alive, _ = jobs.create_job(s, SPEC)
        jobs.claim(s, alive.id, "alive", 30, 3)
        never_sent, _ = jobs.create_job(s, SPEC)
        just_sent, _ = jobs.create_job(s, SPEC)
        jobs.mark_enqueued(s, [just_sent.id])

        result = jobs.reap(s, max_attempts=3, requeue_after_seconds=60)
        assert result.requeued == [lost.id] and result.canceled == [lost_canceling.id]
        assert result.resent == [never_sent.id]
        assert set(result.to_enqueue) == {lost.id, never_sent.id}
        assert s.get(Job, lost.id).status == "queued" and s.get(Job, alive.id).status == "running"
        # A second round right away finds nothing new.
        again = jobs.reap(s, max_attempts=3, requeue_after_seconds=60)
        assert again.to_enqueue == [] and again.failed == []


def test_reaper_does_not_resend_a_backlog_the_broker_still_holds(Session):
    with Session() as s:
        ids = [jobs.create_job(s, SPEC)[0].id for _ in range(3)]
        jobs.mark_enqueued(s, ids, when=db.utcnow() - timedelta(hours=1))  # waiting long, behind other work
        assert jobs.reap(s, max_attempts=3, requeue_after_seconds=60, messages_waiting=3).resent == []
        # One message fewer than waiting jobs: something was lost, so the stale ones go out again.
        assert sorted(jobs.reap(s, max_attempts=3, requeue_after_seconds=60, messages_waiting=2).resent) == sorted(ids)


def test_reaper_resends_at_once_when_the_broker_lost_its_messages(Session):
    # Issue 11: after a Redis restart without persistence the queue is empty; waiting for
    # requeue_after_seconds (120 s by default) left the jobs idle for two minutes.
    with Session() as s:
        ids = [jobs.create_job(s, SPEC)[0].id for _ in range(2)]
        jobs.mark_enqueued(s, ids, when=db.utcnow() - timedelta(seconds=10))
        assert jobs.reap(s, max_attempts=3, requeue_after_seconds=120, messages_waiting=2).resent == []
        assert sorted(jobs.reap(s, max_attempts=3, requeue_after_seconds=120, messages_waiting=0).resent) == \
            sorted(ids)
        # Just sent (within the grace): still in flight to a worker's claim, not lost.
        fresh = jobs.create_job(s, SPEC)[0].id
        jobs.mark_enqueued(s, [fresh])
        assert jobs.reap(s, max_attempts=3, requeue_after_seconds=120, messages_waiting=0).resent == []


def test_reaper_fails_a_job_that_keeps_losing_its_worker(Session):
    with Session() as s:
        job, _ = jobs.create_job(s, SPEC)
        jobs.claim(s, job.id, "dead", 30, 1)
        _expire(s, job.id)
        result = jobs.reap(s, max_attempts=1, requeue_after_seconds=60)
        assert result.failed == [job.id]
        s.refresh(job)
        assert job.status == "failed" and "lost" in job.error


def test_idempotent_create(Session):
    with Session() as s:
        a, created_a = jobs.create_job(s, SPEC, idempotency_key="k", request_hash="h1")
        b, created_b = jobs.create_job(s, SPEC, idempotency_key="k", request_hash="h1")
        assert created_a and not created_b and a.id == b.id
        with pytest.raises(jobs.IdempotencyConflict):
            jobs.create_job(s, SPEC, idempotency_key="k", request_hash="h2")
        # Keys are scoped per API key: another researcher may use the same string.
        c, created_c = jobs.create_job(s, SPEC, owner_key_id="someone", idempotency_key="k", request_hash="h2")
        assert created_c and c.id != a.id
        assert s.scalar(select(func.count()).select_from(Job)) == 2


def _image_row(job_id, position=0, method="robust"):
    return dict(id=jobs.image_id(job_id, position, method), job_id=job_id, position=position, method=method,
                label=0, class_name="red", seed=1, scale=1.0, steps="10", sampler="ddpm", sha256="a" * 64,
                path="aa/x.png", width=16, height=16, channels=3, size_bytes=10, created_at=db.utcnow())


def test_images_are_stored_once_per_job_position_and_method(Session):
    with Session() as s:
        job, _ = jobs.create_job(s, SPEC)
        jobs.claim(s, job.id, "w", 30, 3)
        jobs.store_images(s, [_image_row(job.id)])
        jobs.store_images(s, [_image_row(job.id)])  # a task that ran twice
        s.commit()
        assert s.scalar(select(func.count()).select_from(Image)) == 1


@pytest.mark.parametrize("sql, what", [
    ("UPDATE generation_jobs SET status = 'lost'", "status"),
    ("UPDATE generation_jobs SET progress_step = -1", "progress"),
    ("UPDATE generation_jobs SET preset = NULL", "not null"),
])
def test_database_constraints_refuse_bad_rows(Session, sql, what):
    with Session() as s:
        jobs.create_job(s, SPEC)
        with pytest.raises(IntegrityError):
            s.execute(text(sql))
            s.commit()


def test_an_unknown_sampler_is_stored_as_data_and_refused_at_the_api_edge(Session):
    """Samplers are listed once, in the registry: the database keeps any name (migration 0003 dropped the CHECK)."""
    from pydantic import ValidationError

    from app.schemas import GenerationRequest

    name = "dpm_solver_pp_2m_karras_32_chars"
    assert len(name) == 32
    with Session() as s:
        job, _ = jobs.create_job(s, SPEC)
        s.execute(text(f"UPDATE generation_jobs SET sampler = '{name}'"))
        s.commit()
        assert s.get(Job, job.id, populate_existing=True).sampler == name
    with pytest.raises(ValidationError, match="sampler 'euler' is unknown"):
        GenerationRequest(preset="tiny", guidance="robust", class_labels=[0], sampler="euler")


def _rows_into_older_schema(tmp_path, url: str) -> None:
    """A job with an image, made by today's code and stored in the older schema at ``url`` (its columns only)."""
    from sqlalchemy import MetaData, insert

    full = f"sqlite:///{tmp_path / 'full.db'}"
    db.upgrade(full)
    with db.session_factory(full)() as s:
        job, _ = jobs.create_job(s, SPEC)
        jobs.store_images(s, [_image_row(job.id)])
        s.commit()
        rows = {t.name: [dict(r._mapping) for r in s.execute(select(t))] for t in (Job.__table__, Image.__table__)}
    old = MetaData()
    old.reflect(db.get_engine(url), only=list(rows))
    with db.get_engine(url).begin() as conn:
        for name, items in rows.items():
            table = old.tables[name]
            conn.execute(insert(table), [{k: v for k, v in row.items() if k in table.c} for row in items])


def test_the_sampler_migration_keeps_rows_and_the_other_checks_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    db.upgrade(url, "0002_survey")
    _rows_into_older_schema(tmp_path, url)
    db.upgrade(url)
    with db.session_factory(url)() as s:
        assert s.scalar(select(func.count()).select_from(Image)) == 1  # the rebuild cascaded nothing away
        s.execute(text("UPDATE generation_jobs SET sampler = 'euler'"))
        s.commit()
        with pytest.raises(IntegrityError):
            s.execute(text("UPDATE generation_jobs SET status = 'lost'"))
            s.commit()
        s.rollback()
        s.execute(text("UPDATE generation_jobs SET sampler = 'ddim'"))
        s.commit()
    db.dispose_engines()
    from alembic import command

    command.downgrade(db.alembic_config(url), "0002_survey")
    with db.session_factory(url)() as s:
        assert s.scalar(select(func.count()).select_from(Image)) == 1
        with pytest.raises(IntegrityError):  # the old CHECK is back
            s.execute(text("UPDATE generation_jobs SET sampler = 'euler'"))
            s.commit()
    db.dispose_engines()


def test_cursor_pagination_visits_every_job_once(Session):
    with Session() as s:
        made = [jobs.create_job(s, SPEC)[0].id for _ in range(7)]
        seen, cursor = [], None
        while True:
            page, cursor = jobs.list_jobs(s, limit=3, cursor=cursor)
            seen += [j.id for j in page]
            if cursor is None:
                break
        assert sorted(seen) == sorted(made) and len(seen) == 7
        with pytest.raises(ValueError, match="cursor"):
            jobs.list_jobs(s, limit=3, cursor="not-a-cursor")


SERVICE_TABLES = {"generation_jobs", "generation_images", "generation_previews", "analysis_jobs", "classification_jobs",
                  "robustness_jobs", "service_workers", "api_keys"}


def _schema_drift(url):
    """Differences between the migrated database and the service's models (other parts check their own tables)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import app.keys  # noqa: F401  (its table is part of the metadata)
    import worker.analysis_models  # noqa: F401
    import worker.classification_models  # noqa: F401
    import worker.robustness_models  # noqa: F401

    def ours(obj, name, type_, reflected, compare_to):
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table is None or table in SERVICE_TABLES

    with db.get_engine(url).connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": ours})
        return compare_metadata(context, db.Base.metadata)


def test_migrations_build_exactly_the_models_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'drift.db'}"
    db.upgrade(url)
    db.upgrade(url)  # idempotent
    assert db.current_revision(url) == db.head_revision()
    assert _schema_drift(url) == []
    db.dispose_engines()


@pytest.mark.integration
def test_migrations_build_exactly_the_models_on_postgresql(postgres):
    url = postgres.new_database()
    db.upgrade(url)
    assert db.current_revision(url) == db.head_revision()
    assert _schema_drift(url) == []
    with db.session_factory(url)() as s:
        job, _ = jobs.create_job(s, SPEC)
        with pytest.raises(IntegrityError):
            s.execute(text("UPDATE generation_jobs SET status = 'lost'"))
            s.commit()
        s.rollback()
        s.execute(text("UPDATE generation_jobs SET sampler = 'dpm_solver_pp_2m_karras_32_chars'"))  # data, no CHECK
        s.commit()
