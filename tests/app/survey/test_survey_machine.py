"""The machine-rater pilot as an option on a study: stored apart, run by the worker's code, never in the human numbers.

A demo-preset study (the bundled digit CNN is its judge) with four real pairs sampled in four DDIM
steps: seconds on one core. The machine-vote job runs in the test process with the worker's own code
(``worker.machine_vote_runner``), as the generation jobs do in the other survey tests.
"""
from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import func, select, update
from survey_support import Rater, new_key, run_queued_jobs, sqlite_settings

pytestmark = pytest.mark.slow  # samples the demo preset and loads its judge

DEMO = {"preset": "demo", "steps": "ddim4", "seed": 3, "num_pairs": 4, "raters_per_pair": 3}
PILOT = {"raters": 3, "seed": 1}


@contextlib.contextmanager
def api(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from worker import db

    settings = sqlite_settings(tmp_path)
    with TestClient(create_app(settings, run_reaper=False)) as client:
        client.settings = settings
        client.hdr = {"Authorization": f"Bearer {new_key(settings)}"}
        yield client
    db.dispose_engines()


def run_machine_jobs(settings) -> list[str]:
    import torch

    from worker.db import session_factory
    from worker.machine_vote_runner import run_machine_vote_job
    from worker.survey_models import MachineVoteJob

    torch.set_num_threads(1)
    with session_factory(settings.database_url)() as s:
        ids = list(s.scalars(select(MachineVoteJob.id).where(MachineVoteJob.status == "queued")))
    return [run_machine_vote_job(settings, i) for i in ids]


def machine_rows(settings) -> list[tuple]:
    from worker.db import session_factory
    from worker.survey_models import MachineVote

    with session_factory(settings.database_url)() as s:
        return sorted((v.id, v.pair_id, v.rater, v.side, v.choice, v.a_side, v.u_a, v.u_b)
                      for v in s.scalars(select(MachineVote)))


def human_outputs(client, sid) -> dict:
    """Everything the human statistics and exports serve, as bytes."""
    out = {}
    for path in ("results?n_boot=50", "votes?format=csv", "votes?format=json", "votes?format=tidy",
                 "table2?format=csv", "table2?format=latex"):
        r = client.get(f"/v1/surveys/{sid}/{path}", headers=client.hdr)
        assert r.status_code == 200, (path, r.text)
        out[path] = r.content
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """An open demo study with a machine pilot asked for at creation and two human raters' answers."""
    with api(tmp_path_factory.mktemp("machine")) as client:
        r = client.post("/v1/surveys", json={**DEMO, "machine_pilot": PILOT}, headers=client.hdr)
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        assert r.json()["machine_pilot"]["raters"] == 3
        assert set(run_queued_jobs(client.settings)) <= {"succeeded", "skipped"}
        assert client.get(f"/v1/surveys/{sid}", headers=client.hdr).json()["status"] == "open"
        for answers in ("left", "right"):
            Rater.new(client.app, sid).start().finish(lambda i, pair, a=answers: a if i % 3 else "same")
        client.sid = sid
        yield client


def test_opening_queues_the_pilot_and_the_worker_stores_machine_votes_apart(study):
    client, sid = study, study.sid
    before = human_outputs(client, sid)
    got = client.get(f"/v1/surveys/{sid}/machine-votes", headers=client.hdr).json()
    assert got["status"] == "queued" and got["votes"] == 0 and got["settings"]["raters"] == 3
    assert run_machine_jobs(client.settings) == ["succeeded"]
    got = client.get(f"/v1/surveys/{sid}/machine-votes", headers=client.hdr).json()
    assert got["status"] == "succeeded" and got["progress"] == 1.0 and got["votes"] == 4 * 3
    assert set(got["result"]["per_arm"]) == {"robust", "vanilla"}
    assert len(got["result"]["judge_weights"]["sha256"]) == 64
    # The human statistics and exports are the same bytes with machine votes stored as without.
    assert human_outputs(client, sid) == before
    rows = machine_rows(client.settings)
    assert {r[2] for r in rows} == {"machine-01", "machine-02", "machine-03"}
    # Seeded as `rguide pilot` seeds its pairs (preset, label, seed), not by the random row id: the same
    # design and settings give the same votes in any study.
    from model_core.evaluation.judge import JudgeSettings, simulated_answers
    from worker.db import session_factory
    from worker.survey_models import SurveyPair

    with session_factory(client.settings.database_url)() as s:
        pairs = {p.id: p for p in s.scalars(select(SurveyPair).where(SurveyPair.study_id == sid))}
    for pid in {r[1] for r in rows}:
        mine = sorted((r[2], r[4], r[5]) for r in rows if r[1] == pid)
        ua, ub = next((r[6], r[7]) for r in rows if r[1] == pid)
        (want,) = simulated_answers([ua], [ub], JudgeSettings(**got["settings"]),
                                    [f"demo-{pairs[pid].label}-{pairs[pid].seed}"])
        assert mine == [(f"machine-{j + 1:02d}", {"a": "robust", "b": "vanilla", "same": "same"}[ans], side)
                        for j, (ans, side) in enumerate(want)]
    for _, _, _, side, choice, a_side, ua, ub in rows:
        assert choice in ("robust", "vanilla", "same")
        # The answer reads as a human vote does: the side clicked is A's side exactly when A was chosen.
        assert (side == a_side) == (choice == "robust") and (side == "same") == (choice == "same")
    csv_text = client.get(f"/v1/surveys/{sid}/machine-votes?format=csv", headers=client.hdr).text
    assert csv_text.splitlines()[0].startswith("study_id,pair_id,pair_ordinal") and len(csv_text.splitlines()) == 13
    res = client.get(f"/v1/surveys/{sid}/machine-results?n_boot=50", headers=client.hdr).json()
    assert res["stats"]["n_answers"] == 12 and res["stats"]["n_raters"] == 3
    assert res["stats"]["machine_pilot"]["job_id"] == got["job_id"] and "pilot" in res["power"]
    assert "proxy" in res["note"] and any("non-robust" in line for line in res["limits"])
    ag = res["agreement_with_humans"]
    assert ag["pairs_in_both"] == 4 and ag["human_answers"] == 8
    # The machine report and the human report's own section, both labelled a proxy.
    html = client.get(f"/v1/surveys/{sid}/machine-report?n_boot=50", headers=client.hdr).text
    assert "Machine raters (a proxy)" in html and 'id="machine-summary"' in html
    report = client.get(f"/v1/surveys/{sid}/report?n_boot=50", headers=client.hdr).text
    assert 'id="machine-raters"' in report and "Machine raters: a proxy" in report


def test_a_repeat_returns_the_same_job_and_other_settings_are_refused(study):
    client, sid = study, study.sid
    run_machine_jobs(client.settings)
    job_id = client.get(f"/v1/surveys/{sid}/machine-votes", headers=client.hdr).json()["job_id"]
    r = client.post(f"/v1/surveys/{sid}/machine-votes", json=PILOT, headers=client.hdr)
    assert r.status_code == 200 and r.json()["job_id"] == job_id and r.json()["votes"] == 12
    r = client.post(f"/v1/surveys/{sid}/machine-votes", json={**PILOT, "noise": 0.0}, headers=client.hdr)
    assert r.status_code == 409 and "other settings" in r.json()["detail"]
    assert len(machine_rows(client.settings)) == 12


def test_a_worker_lost_mid_job_loses_nothing_and_the_rerun_writes_the_same_votes(study, monkeypatch):
    from worker import machine_vote_runner, machine_votes
    from worker.db import session_factory
    from worker.reaper import reap_once
    from worker.survey_models import MachineVoteJob

    client, sid = study, study.sid
    run_machine_jobs(client.settings)  # the pilot asked for at creation, if no test ran it yet
    reference = machine_rows(client.settings)
    assert len(reference) == 4 * 3
    assert client.delete(f"/v1/surveys/{sid}/machine-votes", headers=client.hdr).status_code == 204
    assert machine_rows(client.settings) == []
    r = client.post(f"/v1/surveys/{sid}/machine-votes", json=PILOT, headers=client.hdr)
    assert r.status_code == 202 and r.json()["status"] == "queued"

    class Killed(BaseException):  # not an Exception: the runner's handlers must not see it, as with SIGKILL
        pass

    real_store, calls = machine_votes.store_votes, []

    def store_then_die(session, rows):
        calls.append(len(rows))
        real_store(session, rows)
        if len(calls) == 2:
            raise Killed()

    monkeypatch.setattr(machine_vote_runner, "BATCH_PAIRS", 1)
    monkeypatch.setattr(machine_votes, "store_votes", store_then_die)
    with pytest.raises(Killed):
        run_machine_jobs(client.settings)
    monkeypatch.setattr(machine_votes, "store_votes", real_store)
    partial = machine_rows(client.settings)
    assert len(partial) == 2 * 3 and set(partial) <= set(reference)
    Session = session_factory(client.settings.database_url)
    with Session() as s:
        assert s.scalar(select(MachineVoteJob.status).where(MachineVoteJob.study_id == sid)) == "running"
        # The lost worker's lease runs out (its keeper thread died with it).
        s.execute(update(MachineVoteJob).values(lease_expires_at=MachineVoteJob.created_at))
        s.commit()

    class Recorder:
        def __init__(self):
            self.sent = []

        def pending(self):
            return None

        def send(self, ids, task):
            self.sent.append((tuple(ids), task))
            return list(ids)

    recorder = Recorder()
    result = reap_once(client.settings, recorder)
    assert result.requeued and (tuple(result.requeued), "rguide.machine_votes") in recorder.sent
    assert run_machine_jobs(client.settings) == ["succeeded"]
    assert machine_rows(client.settings) == reference  # seeded: the same votes, none twice


BAD = [
    ({"machine_pilot": {"raters": 0}}, ["body", "machine_pilot", "raters"]),
    ({"machine_pilot": {"raters": "5"}}, ["body", "machine_pilot", "raters"]),
    ({"machine_pilot": {"noise": -1.0}}, ["body", "machine_pilot", "noise"]),
    ({"machine_pilot": {"judge": "/etc/passwd"}}, ["body", "machine_pilot", "judge"]),
    ({"machine_pilot": {}, "preset": "tiny"}, ["body", "machine_pilot"]),
]


@pytest.mark.parametrize("extra,loc", BAD, ids=[str(loc) for _, loc in BAD])
def test_a_bad_pilot_option_is_a_422_naming_the_field_and_stores_nothing(tmp_path, extra, loc):
    from worker.survey_models import MachineVoteJob, Study

    with api(tmp_path) as client:
        r = client.post("/v1/surveys", json={**DEMO, **extra}, headers=client.hdr)
        assert r.status_code == 422, r.text
        assert loc in [e["loc"] for e in r.json()["detail"]], r.json()
        with client.app.state.sessions() as s:
            assert s.scalar(select(func.count()).select_from(Study)) == 0
            assert s.scalar(select(func.count()).select_from(MachineVoteJob)) == 0


def test_a_preset_without_a_judge_or_a_study_not_open_is_refused(tmp_path):
    with api(tmp_path) as client:
        r = client.post("/v1/surveys", json={"preset": "tiny", "steps": "ddim4", "seed": 1, "num_pairs": 2},
                        headers=client.hdr)
        sid = r.json()["id"]
        r = client.post(f"/v1/surveys/{sid}/machine-votes", json={}, headers=client.hdr)
        assert r.status_code == 409 and "no judge network" in r.json()["detail"]
        r = client.post("/v1/surveys", json=DEMO, headers=client.hdr)
        r = client.post(f"/v1/surveys/{r.json()['id']}/machine-votes", json={}, headers=client.hdr)
        assert r.status_code == 409 and "generating" in r.json()["detail"]
        r = client.post(f"/v1/surveys/{sid}/machine-votes", json={"raters": 0}, headers=client.hdr)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "raters"]
        # 3.0 is the JSON integer 3 (past the edge, refused for the preset); "3" and 3.5 are not integers.
        assert client.post(f"/v1/surveys/{sid}/machine-votes", json={"raters": 3.0}, headers=client.hdr
                           ).status_code == 409
        for bad in ("3", 3.5, True):
            r = client.post(f"/v1/surveys/{sid}/machine-votes", json={"raters": bad}, headers=client.hdr)
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "raters"], bad


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_the_machine_votes_migration_and_constraints_on_postgresql(service_factory):
    """0010 up and down on PostgreSQL; the table refuses a second vote of one rater on a pair, an answer outside
    the votes' vocabulary and a rater that is not a machine; a study's deletion takes its machine votes along."""
    from alembic import command
    from fastapi.testclient import TestClient
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import IntegrityError
    from survey_support import open_study

    from app.main import create_app
    from worker import db, machine_votes
    from worker.survey_models import MachineVote, Study, SurveyPair

    env = service_factory()
    url = env.settings.database_url
    with TestClient(create_app(env.settings, run_reaper=False)) as client:
        study_id = open_study(client, new_key(env.settings), num_pairs=1)["id"]
    Session = db.session_factory(url)
    with Session() as s:
        study = s.get(Study, study_id)
        pair_id = s.scalar(select(SurveyPair.id).where(SurveyPair.study_id == study_id,
                                                       SurveyPair.is_attention_check.is_(False)))
        job = machine_votes.new_job(study, PILOT, None)
        s.add(job)
        s.commit()
        row = {"study_id": study_id, "pair_id": pair_id, "job_id": job.id, "side": "left", "choice": "robust",
               "a_side": "left", "u_a": 0.5, "u_b": -0.5, "judge": PILOT, "judge_sha256": "0" * 64,
               "code_version": "test"}
        machine_votes.store_votes(s, [{**row, "id": machine_votes.vote_id(pair_id, "machine-01"),
                                       "rater": "machine-01"}])
        machine_votes.store_votes(s, [{**row, "id": machine_votes.vote_id(pair_id, "machine-01"),
                                       "rater": "machine-01", "side": "right"}])  # a re-run: kept as it was
        assert [v.side for v in s.scalars(select(MachineVote))] == ["left"]
        for bad in ({"id": "x1", "rater": "machine-01"}, {"id": "x2", "rater": "machine-02", "side": "both"},
                    {"id": "x3", "rater": "machine-03", "a_side": "same"}, {"id": "x4", "rater": "rater-1"}):
            with pytest.raises(IntegrityError):
                s.add(MachineVote(**{**row, **bad}))
                s.commit()
            s.rollback()
        s.execute(text("DELETE FROM survey_studies WHERE id = :i"), {"i": study_id})
        s.commit()
        assert s.scalar(select(func.count()).select_from(MachineVote)) == 0
    db.dispose_engines()
    command.downgrade(db.alembic_config(url), "0009_classifications")
    insp = inspect(db.get_engine(url))
    assert not {"survey_machine_votes", "survey_machine_jobs"} & set(insp.get_table_names())
    assert "machine_pilot" not in {c["name"] for c in insp.get_columns("survey_studies")}
    db.dispose_engines()
    db.upgrade(url)
    assert db.current_revision(url) == db.head_revision()
    uniques = {tuple(u["column_names"]) for u in inspect(db.get_engine(url)).get_unique_constraints(
        "survey_machine_votes")}
    assert ("pair_id", "rater") in uniques
    db.dispose_engines()


def test_rguide_pilot_study_follows_the_job_and_writes_the_machine_files(study, tmp_path, monkeypatch, capsys):
    """``rguide pilot --study ID``, its HTTP calls answered by the in-process app (no server to start)."""
    import io
    import json
    import urllib.request

    import rguide.remote_evaluate as remote
    from rguide.cli import main

    client, sid = study, study.sid
    run_machine_jobs(client.settings)

    def call(base, key, method, path, body=None):
        r = client.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code < 400, r.text
        return r.json()

    class Reply(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def urlopen(req, timeout=None):
        from urllib.parse import urlsplit

        url = urlsplit(req.full_url)
        r = client.get(f"{url.path}?{url.query}", headers=dict(req.header_items()))
        assert r.status_code == 200, r.text
        return Reply(r.content)

    monkeypatch.setattr(remote, "_call", call)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    key = client.hdr["Authorization"].split()[1]
    out = tmp_path / "pilot"
    assert main(["pilot", "--study", sid, "--url", "http://test", "--api-key", key, "--raters", "3", "--seed", "1",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Machine raters are a proxy" in printed and "Agreement with the human answers" in printed
    assert json.loads((out / "machine-results.json").read_text())["stats"]["n_answers"] == 12
    assert len((out / "machine-votes.csv").read_text().splitlines()) == 13
    assert "Machine raters (a proxy)" in (out / "machine-report.html").read_text()
    # Without judge flags the study's own pilot (other settings) is followed, not refused.
    assert main(["pilot", "--study", sid, "--url", "http://test", "--api-key", key, "--out", str(out),
                 "--no-progress"]) == 0
    assert "following the study's existing pilot" in capsys.readouterr().out
    # Sampling flags make no sense for a study's own images: refused, naming them.
    assert main(["pilot", "--study", sid, "--api-key", key, "--steps", "5", "--out", str(out)]) != 0
    assert "--steps" in capsys.readouterr().err


def test_a_multi_arm_study_gets_machine_votes_per_arm_pair_and_a_ranking(tmp_path):
    arms = [{"method": "robust"}, {"method": "vanilla"}, {"method": "none"}]
    with api(tmp_path) as client:
        r = client.post("/v1/surveys", json={**DEMO, "num_pairs": 2, "arms": arms, "machine_pilot": PILOT},
                        headers=client.hdr)
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        assert set(run_queued_jobs(client.settings)) <= {"succeeded", "skipped"}
        assert client.get(f"/v1/surveys/{sid}", headers=client.hdr).json()["status"] == "open"
        assert run_machine_jobs(client.settings) == ["succeeded"]
        got = client.get(f"/v1/surveys/{sid}/machine-votes", headers=client.hdr).json()
        assert got["votes"] == 2 * 3 * 3 and set(got["result"]["per_arm"]) == {"robust", "vanilla", "unguided"}
        assert all(a["images"] == 2 for a in got["result"]["per_arm"].values())  # an item's image judged once
        header, *rows = client.get(f"/v1/surveys/{sid}/machine-votes?format=csv", headers=client.hdr).text.splitlines()
        assert header.endswith(",arm_a,arm_b") and len(rows) == 18
        res = client.get(f"/v1/surveys/{sid}/machine-results?n_boot=50", headers=client.hdr).json()
        assert res["stats"]["arms"] == ["robust", "vanilla", "unguided"] and len(res["stats"]["arm_pairs"]) == 3
        assert "ranking" in res["stats"] and "width" in res["power"] and res["agreement_with_humans"] is None
        html = client.get(f"/v1/surveys/{sid}/machine-report?n_boot=50", headers=client.hdr).text
        assert "Machine raters (a proxy)" in html and 'id="machine-raters"' in html
