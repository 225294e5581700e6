"""The survey's guarantees on PostgreSQL, under real concurrency (threads, one session each).

SQLite lets one writer in at a time, so races are rare there by construction;
PostgreSQL runs transactions side by side, which is where the guarded
``UPDATE ... RETURNING`` counter and the unique constraints have to hold.
"""
from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from survey_support import new_key, open_study

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def pg_api(service_factory):
    env = service_factory()
    from app.main import create_app

    with TestClient(create_app(env.settings, run_reaper=False)) as client:
        client.env = env
        client.key = new_key(env.settings)
        yield client


def _run_threads(n, target):
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def wrapped(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # surfaced below, with the thread's own traceback
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]


def test_concurrent_raters_keep_caps_and_counterbalancing(pg_api):
    from app.survey import assign
    from app.survey.voting import record_vote
    from worker.survey_models import Assignment, Study, SurveyPair, SurveyVote

    study_out = open_study(pg_api, pg_api.key, num_pairs=4, raters_per_pair=7)
    Session = pg_api.app.state.sessions

    def rater(i):
        with Session() as s:
            study = s.get(Study, study_out["id"])
            r = assign.start_rater(s, study, f"browser-{i}", assign.Participant())
            while (a := assign.current_assignment(s, study, r)) is not None:
                record_vote(s, study, r, pair_id=a.pair_id, answer=("left", "right", "same")[i % 3])

    _run_threads(12, rater)
    with Session() as s:
        pairs = list(s.scalars(select(SurveyPair).where(SurveyPair.study_id == study_out["id"])))
        for p in pairs:
            sides = list(s.scalars(select(Assignment.a_side).where(Assignment.pair_id == p.id)))
            # The per-pair cap holds exactly, the counter matches the rows, sides alternate.
            assert p.n_assigned == len(sides) == 7
            assert abs(sides.count("left") - sides.count("right")) <= 1
            assert s.scalar(select(func.count()).where(SurveyVote.pair_id == p.id)) == 7
        per_rater = s.execute(select(SurveyVote.rater_id, func.count()).group_by(SurveyVote.rater_id)).all()
    assert sum(n for _, n in per_rater) == 28 and all(1 <= n <= 4 for _, n in per_rater)


def test_releases_and_exclusions_under_concurrency_keep_the_live_counts_true(pg_api):
    """Raters take pairs while others abandon theirs (released past the time-out) and one is excluded:
    each pair's live counters always equal its unreleased assignments, within the cap."""
    from datetime import timedelta

    from sqlalchemy import update

    from app.survey import assign, quality
    from app.survey.voting import VoteRefused, record_vote
    from worker.survey_models import Assignment, Rater, Study, SurveyPair

    study_out = open_study(pg_api, pg_api.key, num_pairs=3, raters_per_pair=6, assignment_timeout_seconds=30)
    Session = pg_api.app.state.sessions

    def rater(i):
        with Session() as s:
            study = s.get(Study, study_out["id"])
            r = assign.start_rater(s, study, f"r-{i}", assign.Participant())
            while (a := assign.current_assignment(s, study, r)) is not None:
                if i % 2 == 0:  # this one walks away: their pair looks abandoned long ago
                    s.execute(update(Assignment).where(Assignment.id == a.id)
                              .values(assigned_at=a.assigned_at - timedelta(seconds=60)))
                    s.commit()
                    assign.release_expired(s, study)
                    return
                try:
                    record_vote(s, study, r, pair_id=a.pair_id, answer="left")
                except VoteRefused as exc:  # released and taken by someone else meanwhile
                    assert "given to another participant" in exc.message
                    return
            if i == 1:
                quality.exclude(s, s.get(Rater, r.id), "researcher")

    _run_threads(16, rater)
    with Session() as s:
        for p in s.scalars(select(SurveyPair).where(SurveyPair.study_id == study_out["id"])):
            live = list(s.scalars(select(Assignment.a_side).where(Assignment.pair_id == p.id,
                                                                  Assignment.released_at.is_(None))))
            assert (p.n_a_left, p.n_a_right) == (live.count("left"), live.count("right"))
            assert len(live) <= 6


def test_simultaneous_identical_votes_store_one(pg_api):
    from app.survey import assign
    from app.survey.voting import VoteRefused, record_vote
    from worker.survey_models import Study, SurveyVote

    study_out = open_study(pg_api, pg_api.key, num_pairs=2)
    Session = pg_api.app.state.sessions
    with Session() as s:
        study = s.get(Study, study_out["id"])
        r = assign.start_rater(s, study, "double-clicker", assign.Participant())
        pair_id = assign.current_assignment(s, study, r).pair_id
        rater_id = r.id
    outcomes: list[str] = []

    def click(i):
        with Session() as s:
            study = s.get(Study, study_out["id"])
            rater = s.get(type(r), rater_id)
            try:
                record_vote(s, study, rater, pair_id=pair_id, answer="left" if i % 2 else "right")
                outcomes.append("stored")
            except VoteRefused as exc:
                assert exc.status == 409 and "already answered" in exc.message
                outcomes.append("refused")

    _run_threads(8, click)
    assert sorted(outcomes) == ["refused"] * 7 + ["stored"]
    with Session() as s:
        assert s.scalar(select(func.count()).where(SurveyVote.rater_id == rater_id)) == 1


def test_the_survey_migration_downgrades_and_upgrades(service_factory):
    from alembic import command
    from sqlalchemy import inspect

    from worker import db

    env = service_factory()
    url = env.settings.database_url
    tables = {"survey_studies", "survey_pairs", "survey_raters", "survey_assignments", "survey_votes"}
    assert tables <= set(inspect(db.get_engine(url)).get_table_names())
    command.downgrade(db.alembic_config(url), "0001_generation_service")
    assert not tables & set(inspect(db.get_engine(url)).get_table_names())
    db.upgrade(url)
    assert db.current_revision(url) == db.head_revision()
    uniques = {tuple(u["column_names"]) for u in inspect(db.get_engine(url)).get_unique_constraints("survey_votes")}
    assert ("rater_id", "pair_id") in uniques


def test_hostile_ids_and_text_are_refused_not_crashed_on(pg_api):
    """PostgreSQL rejects NUL characters in text: they must be refused at the edge, never reach a query."""
    from survey_support import Rater

    study = open_study(pg_api, pg_api.key, num_pairs=2)
    hdr = {"Authorization": f"Bearer {pg_api.key}"}
    rater = Rater.new(pg_api.app, study["id"]).start()
    r = rater.client.post(f"/s/{study['id']}/vote", data={"csrf": rater.csrf, "pair": "ab\x00cd", "answer": "left"})
    assert r.status_code == 403 and "not assigned" in r.text
    assert rater.client.get("/s/ab%00cd").status_code == 404
    assert rater.client.get(f"/s/{study['id']}/img/ab%00cd/left.png").status_code == 404
    assert pg_api.get("/v1/surveys/ab%00cd", headers=hdr).status_code == 404
    r = pg_api.post("/v1/surveys", json={"preset": "tiny", "num_pairs": 1, "title": "a\x00b"}, headers=hdr)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "title"]


def test_a_multi_arm_study_on_postgresql_and_the_0007_downgrade_refuses_to_lose_it(service_factory):
    """The arms columns and their CHECKs on PostgreSQL; downgrading below 0007 refuses while a multi-arm study
    is stored, and works once it is gone."""
    from alembic import command
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import IntegrityError
    from survey_support import Rater

    from app.main import create_app
    from worker import db
    from worker.survey_models import Study, SurveyPair

    env = service_factory()
    url = env.settings.database_url
    arms = [{"method": "robust"}, {"method": "vanilla"}, {"method": "robust", "scale": 2.0, "name": "strong"}]
    with TestClient(create_app(env.settings, run_reaper=False)) as client:
        key = new_key(env.settings)
        study = open_study(client, key, num_pairs=1, arms=arms, raters_per_pair=2)
        Rater.new(client.app, study["id"]).start().finish()
        results = client.get(f"/v1/surveys/{study['id']}/results?n_boot=20",
                             headers={"Authorization": f"Bearer {key}"}).json()
        assert results["arms"] == ["robust", "vanilla", "strong"] and results["n_answers"] == 3
    Session = db.session_factory(url)
    with Session() as s:
        assert s.get(Study, study["id"]).arms[2]["name"] == "strong"
        pair_id = s.scalar(select(SurveyPair.id).where(SurveyPair.study_id == study["id"]).limit(1))
        for bad in ("UPDATE survey_pairs SET arm_b = NULL WHERE id = :p",
                    "UPDATE survey_pairs SET arm_b = arm_a WHERE id = :p"):
            with pytest.raises(IntegrityError):
                s.execute(text(bad), {"p": pair_id})
                s.commit()
            s.rollback()
        with pytest.raises(IntegrityError):
            s.execute(text("UPDATE survey_studies SET design = NULL WHERE id = :i"), {"i": study["id"]})
            s.commit()
        s.rollback()
    db.dispose_engines()
    with pytest.raises(RuntimeError, match="multi-arm"):
        command.downgrade(db.alembic_config(url), "0006_analyses_and_previews")
    with Session() as s:
        s.execute(text("DELETE FROM survey_studies"))
        s.commit()
    db.dispose_engines()
    command.downgrade(db.alembic_config(url), "0006_analyses_and_previews")
    assert "arm_a" not in {c["name"] for c in inspect(db.get_engine(url)).get_columns("survey_pairs")}
    db.upgrade(url)
    assert db.current_revision(url) == db.head_revision()
    db.dispose_engines()
