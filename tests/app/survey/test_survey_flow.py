"""The survey in-process (SQLite, real generation code): studies, raters, votes, refusals, exports."""
from __future__ import annotations

import hashlib
import json
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from survey_support import (
    FAST,
    Rater,
    create_study,
    field_value,
    open_study,
    run_queued_jobs,
    snapshot,
    survey_api,
)

from worker import db


@pytest.fixture
def api(tmp_path):
    with survey_api(tmp_path) as client:
        yield client


def _votes(api):
    from worker.survey_models import SurveyVote

    with api.app.state.sessions() as s:
        return list(s.scalars(select(SurveyVote).order_by(SurveyVote.created_at)))


# -- creating and opening -----------------------------------------------------------------------------

def test_creating_needs_a_researcher_key(api):
    r = api.post("/v1/surveys", json=FAST)
    assert r.status_code == 401 and "API key" in r.json()["detail"]
    assert api.get("/v1/surveys").status_code == 401


@pytest.mark.parametrize("body, loc, words", [
    ({"preset": "nope"}, ["body", "preset"], "unknown"),
    ({"labels": [0, 9]}, ["body", "labels", 1], "out of range"),
    ({"labels": ["red", "purple"]}, ["body", "labels", 1], "not a class"),
    ({"labels": [0], "num_pairs": 3}, ["body", "labels"], "either"),
    ({"method_b": "robust"}, ["body", "method_b"], "differ"),
    ({"method_a": "none"}, ["body", "method_a"], "reserve"),
    ({"method_a": "sharpest"}, ["body", "method_a"], "not a guidance method"),
    ({"steps": "ddim0"}, ["body", "steps"], ""),
    ({"scale_a": -1.0}, ["body", "scale_a"], "positive"),
    ({"raters_per_pair": 0}, ["body", "raters_per_pair"], ""),
    ({"completion_code": "has space"}, ["body", "completion_code"], ""),
])
def test_invalid_studies_name_the_field_and_store_nothing(api, body, loc, words):
    from worker.models import Job
    from worker.survey_models import Study

    r = api.post("/v1/surveys", json={**FAST, **body}, headers=api.hdr)
    assert r.status_code == 422, r.text
    problems = r.json()["detail"]
    assert any(p["loc"][:len(loc)] == loc and words in p["msg"] for p in problems), problems
    with api.app.state.sessions() as s:
        assert s.scalars(select(Study)).all() == [] and s.scalars(select(Job)).all() == []


def test_a_study_generates_seed_matched_pairs_then_opens_with_a_frozen_manifest(api):
    study = create_study(api, api.key, num_pairs=6, raters_per_pair=3, attention_checks=True)
    assert study["status"] == "generating" and study["num_pairs"] == 6 and study["attention_check_pairs"] == 2
    assert (study["method_a"], study["scale_a"], study["method_b"], study["scale_b"]) == ("robust", 1.0, "vanilla", 0.5)
    sid = study["id"]
    assert api.get(f"/v1/surveys/{sid}/manifest", headers=api.hdr).status_code == 409
    rater_page = api.get(f"/s/{sid}")
    assert rater_page.status_code == 503 and "being prepared" in rater_page.text

    assert run_queued_jobs(api.settings) == ["succeeded"]
    status = api.get(f"/v1/surveys/{sid}", headers=api.hdr).json()
    assert status["status"] == "open" and status["generation"]["progress"] == 1.0

    r = api.get(f"/v1/surveys/{sid}/manifest", headers=api.hdr)
    manifest = r.json()
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert hashlib.sha256(canonical).hexdigest() == r.headers["x-manifest-sha256"] == status["manifest_sha256"]
    assert manifest["code_version"] and manifest["settings"]["seed"] == FAST["seed"]
    assert manifest["settings"]["method_a"] == {"method": "robust", "scale": 1.0}
    real = [p for p in manifest["pairs"] if not p["attention_check"]]
    checks = [p for p in manifest["pairs"] if p["attention_check"]]
    assert len(real) == 6 and len(checks) == 2
    for i, p in enumerate(real):
        assert p["seed"] == FAST["seed"] + i
        robust, vanilla = p["images"]["robust"], p["images"]["vanilla"]
        assert robust["sha256"] != vanilla["sha256"] and (robust["scale"], vanilla["scale"]) == (1.0, 0.5)
        # The hash is the stored file's: the researcher can check the images against the manifest
        # (a study's originals are served to its researchers only: raters must stay blind).
        png = api.get(f"/v1/images/{robust['image_id']}.png", headers=api.hdr).content
        assert hashlib.sha256(png).hexdigest() == robust["sha256"]
        assert api.get(f"/v1/images/{robust['image_id']}.png").status_code == 404
    # The attention checks are instructed (Left, then Right) and use images of their own: labels drawn
    # apart, seeds after the real pairs', so no check shows an image of a real pair.
    real_hashes = {im["sha256"] for p in real for im in p["images"].values()}
    assert [c["correct_answer"] for c in checks] == ["left", "right"]
    assert [c["seed"] for c in checks] == [FAST["seed"] + 6, FAST["seed"] + 7]
    for c in checks:
        assert c["check_kind"] == "instructed" and not {im["sha256"] for im in c["images"].values()} & real_hashes

    # Frozen: votes and closing change nothing in it.
    Rater.new(api.app, sid).start().finish()
    api.post(f"/v1/surveys/{sid}/close", headers=api.hdr)
    again = api.get(f"/v1/surveys/{sid}/manifest", headers=api.hdr)
    assert again.json() == manifest and again.headers["x-manifest-sha256"] == r.headers["x-manifest-sha256"]


def test_explicit_labels_and_swapped_methods(api):
    study = open_study(api, api.key, labels=["blue", 0, "GREY"], method_a="vanilla", method_b="robust",
                       scale_a=0.25, scale_b=2.0)
    manifest = api.get(f"/v1/surveys/{study['id']}/manifest", headers=api.hdr).json()
    assert [p["label"] for p in manifest["pairs"]] == [2, 0, 3]
    assert [p["class_name"] for p in manifest["pairs"]] == ["blue", "red", "grey"]
    for p in manifest["pairs"]:
        assert p["images"]["vanilla"]["method"] == "vanilla" and p["images"]["vanilla"]["scale"] == 0.25
        assert p["images"]["robust"]["method"] == "robust" and p["images"]["robust"]["scale"] == 2.0


def test_methods_that_are_not_one_pair_job_are_generated_as_two_jobs_with_the_same_seeds(api, monkeypatch):
    import dataclasses

    from app.survey import studies

    # A preset whose comparison is not robust/vanilla: these two methods cannot share one "pair" job.
    real = studies.get_preset
    monkeypatch.setattr(studies, "get_preset",
                        lambda name=None: dataclasses.replace(real(name), comparison=("robust", "none")))
    study = create_study(api, api.key, num_pairs=3)
    assert len(run_queued_jobs(api.settings)) == 2
    manifest = api.get(f"/v1/surveys/{study['id']}/manifest", headers=api.hdr).json()
    for i, p in enumerate(manifest["pairs"]):
        a, b = p["images"]["robust"], p["images"]["vanilla"]
        assert a["generation_job"] != b["generation_job"] and p["seed"] == FAST["seed"] + i


def test_random_labels_are_reproducible_and_spread_over_the_classes():
    from app.survey.studies import draw_labels

    assert draw_labels(4, 10, 5) == draw_labels(4, 10, 5) != draw_labels(4, 10, 6)
    labels = draw_labels(4, 10, 5)
    assert all(labels.count(c) in (2, 3) for c in range(4))
    assert len(set(draw_labels(1000, 200, 1))) == 200  # the paper: 200 distinct classes


def test_a_failed_generation_fails_the_study(api):
    from worker.models import Job

    study = create_study(api, api.key, num_pairs=2)

    with api.app.state.sessions() as s:
        job_id = s.scalars(select(Job.id)).one()
    # A study's job is its researcher's: no one else can see or cancel it.
    assert api.post(f"/v1/generations/{job_id}/cancel").status_code == 404
    assert api.post(f"/v1/generations/{job_id}/cancel", headers=api.hdr).status_code == 200
    status = api.get(f"/v1/surveys/{study['id']}", headers=api.hdr).json()
    assert status["status"] == "failed" and "canceled" in status["error"]
    assert api.get(f"/s/{study['id']}").status_code == 410


# -- raters ----------------------------------------------------------------------------------------------

def test_a_rater_answers_every_pair_once_and_gets_the_completion_code(api):
    study = open_study(api, api.key, num_pairs=4, attention_checks=True, attention_checks_per_rater=1,
                       completion_code="THANKS-42")
    rater = Rater.new(api.app, study["id"]).start(PROLIFIC_PID="5f1a2b3c4d5e6f7a8b9c0d1e", STUDY_ID="st1",
                                                  SESSION_ID="se1")
    seen = []
    answers = ["left", "right", "same", "left", "right"]
    while not rater.done:
        seen.append(rater.pair_id)
        assert re.search(r'<progress id="progress" max="5" value="%d"' % (len(seen) - 1), rater.page)
        if rater.instruction:  # the attention check says which side to choose: "left" (the first check)
            assert rater.instruction == "left" and "Attention check" in rater.page
            answers[len(seen) - 1] = rater.instruction
        assert rater.vote(answers[len(seen) - 1]).status_code == 200
    assert len(seen) == len(set(seen)) == 5
    assert rater.completed and "THANKS-42" in rater.page
    votes = _votes(api)
    assert [v.pair_id for v in votes] == seen and [v.position for v in votes] == [1, 2, 3, 4, 5]
    assert [v.side for v in votes] == answers
    for v in votes:
        if v.is_attention_check:
            assert v.choice in ("robust", "vanilla", "same") and v.attention_passed is True
        elif v.side == "same":
            assert v.choice == "same"
        else:
            assert v.choice == ("robust" if v.side == v.a_side else "vanilla")
        # Without JavaScript: loading unknown, timing from the server.
        assert v.images_loaded is None and v.client_ms is None and v.input == "form" and v.server_ms >= 0
    from worker.survey_models import Rater as RaterRow

    with api.app.state.sessions() as s:
        row = s.scalars(select(RaterRow)).one()
    assert (row.external_id, row.source, row.platform_study_id, row.platform_session_id) == (
        "prolific:5f1a2b3c4d5e6f7a8b9c0d1e", "prolific", "st1", "se1")
    assert row.completed_at is not None and row.check_positions and 1 not in row.check_positions


def test_a_rater_resumes_where_they_stopped(api):
    study = open_study(api, api.key, num_pairs=4)
    pid = "returning0001"
    first = Rater.new(api.app, study["id"]).start(PROLIFIC_PID=pid)
    first.vote("left")
    here = first.pair_id
    # A reload, and a visit to the study link again, show the same pair, same sides.
    first.load()
    assert first.pair_id == here
    assert first.client.get(f"/s/{study['id']}").url.path.endswith("/pair")
    # The same participant on another device continues there; the first browser no longer answers for them.
    other = Rater.new(api.app, study["id"])
    r = other.client.get(f"/s/{study['id']}", params={"PROLIFIC_PID": pid})
    other.page = r.text
    assert r.url.path.endswith("/pair") and other.pair_id == here
    assert other.finish() == 3
    assert len(_votes(api)) == 4


def test_consent_is_required_and_bad_participant_ids_are_refused(api):
    study = open_study(api, api.key, num_pairs=2)
    client = TestClient(api.app)
    page = client.get(f"/s/{study['id']}")
    assert "Which image is more realistic" in page.text and "Consent" in page.text
    r = client.post(f"/s/{study['id']}/start", data={"csrf": field_value(page.text, "csrf")})
    assert r.status_code == 422 and "consent" in r.text
    bad = client.get(f"/s/{study['id']}", params={"PROLIFIC_PID": "<script>"})
    assert bad.status_code == 400 and "PROLIFIC_PID" in bad.text
    assert snapshot(api.settings)["raters"] == 0


def test_caps_per_rater_and_per_pair_and_least_answered_first(api):
    study = open_study(api, api.key, num_pairs=6, pairs_per_rater=2, raters_per_pair=2)
    from worker.survey_models import SurveyPair

    for n in range(1, 7):
        assert Rater.new(api.app, study["id"]).start().finish() == 2
        with api.app.state.sessions() as s:
            counts = [p.n_assigned for p in s.scalars(select(SurveyPair))]
        # Least answered first: coverage never differs by more than one between pairs.
        assert max(counts) - min(counts) <= 1 and sum(counts) == 2 * n
    late = TestClient(api.app).get(f"/s/{study['id']}")
    assert late.status_code == 200 and "all the answers it needs" in late.text


def test_counterbalancing_keeps_each_pair_within_one_of_even(api):
    """Many raters, interleaved as if at the same time: each pair's A-left count is within one of half."""
    study = open_study(api, api.key, num_pairs=5, raters_per_pair=1000)
    raters = [Rater.new(api.app, study["id"]).start() for _ in range(23)]
    first_pairs = [r.pair_id for r in raters]
    answers = ["left", "right", "same"]
    step = 0
    while not all(r.done for r in raters):
        for i, r in enumerate(raters):
            if not r.done and (i + step) % 3:  # raters advance at different speeds
                assert r.vote(answers[(i + step) % 3]).status_code == 200
        step += 1
    votes = _votes(api)
    assert len(votes) == 23 * 5
    by_pair: dict[str, list[str]] = {}
    for v in votes:
        by_pair.setdefault(v.pair_id, []).append(v.a_side)
    for sides in by_pair.values():
        assert len(sides) == 23 and abs(sides.count("left") - sides.count("right")) <= 1
    # Each rater their own order: not everyone starts with the same pair.
    assert len(set(first_pairs)) > 1
    orders = {tuple(v.pair_id for v in votes if v.rater_id == rid) for rid in {v.rater_id for v in votes}}
    assert len(orders) > 1


def test_images_are_served_blind_and_only_to_their_rater(api):
    study = open_study(api, api.key, num_pairs=2)
    a = Rater.new(api.app, study["id"]).start()
    src = re.search(r'id="img-left" src="([^"]+)"', a.page).group(1)
    png = a.client.get(src)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert b"tEXt" not in png.content and b"robust" not in png.content and b"vanilla" not in png.content
    import io

    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(png.content)) as im:
        assert im.size == (16, 16)
    b = Rater.new(api.app, study["id"]).start()
    assert b.client.get(src).status_code == 404
    assert TestClient(api.app).get(src).status_code == 404


def test_the_pages_are_self_contained(api):
    study = open_study(api, api.key, num_pairs=2)
    rater = Rater.new(api.app, study["id"]).start()
    r = rater.load()
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    for url in re.findall(r'(?:src|href|action)="([^"]+)"', r.text):
        assert url.startswith("/"), url
        assert not url.startswith("//")
    for asset in ("survey.css", "survey.js", "favicon.svg"):
        res = rater.client.get(f"/static/survey/{asset}")
        body = res.content.replace(b'xmlns="http://www.w3.org/2000/svg"', b"")  # a name, never fetched
        assert res.status_code == 200 and b"http" not in body and b"@import" not in body and b"url(" not in body
    assert rater.client.get("/static/survey/..%2Fsurvey.py").status_code == 404


# -- votes that must not count ----------------------------------------------------------------------------

@pytest.fixture
def two_raters(api):
    study = open_study(api, api.key, num_pairs=3, min_answer_ms=3000)
    a = Rater.new(api.app, study["id"]).start()
    b = Rater.new(api.app, study["id"]).start()
    return study, a, b


def _refused(api, rater, form, status, words):
    before = snapshot(api.settings)
    r = rater.client.post(f"/s/{rater.study_id}/vote", data=form)
    assert r.status_code == status, r.text
    assert words in r.text, r.text
    assert snapshot(api.settings) == before
    # The same refusal for a script that asks for JSON, as problem+json.
    j = rater.client.post(f"/s/{rater.study_id}/vote", data=form, headers={"Accept": "application/json"})
    assert j.status_code == status and words in j.json()["detail"]
    assert snapshot(api.settings) == before
    return r


def test_a_duplicate_vote_is_refused_and_changes_nothing(api, two_raters):
    _, a, _ = two_raters
    form = {"csrf": a.csrf, "pair": a.pair_id, "answer": "left"}
    assert a.client.post(f"/s/{a.study_id}/vote", data=form).status_code == 200
    _refused(api, a, form, 409, "already answered")
    _refused(api, a, {**form, "answer": "right"}, 409, "first answer is kept")
    assert [v.side for v in _votes(api)] == ["left"]


def test_the_unique_constraint_itself_refuses_a_second_vote(api, two_raters):
    """Even a writer that skips every check cannot store two votes of one rater on one pair."""
    from sqlalchemy.exc import IntegrityError

    from worker.survey_models import SurveyVote

    _, a, _ = two_raters
    a.vote("left")
    with api.app.state.sessions() as s:
        first = s.scalars(select(SurveyVote)).one()
        clone = SurveyVote(**{c.name: getattr(first, c.name) for c in SurveyVote.__table__.columns})
        clone.id = "x" * 32
        s.add(clone)
        with pytest.raises(IntegrityError):
            s.commit()


def test_a_vote_for_a_pair_not_assigned_to_the_rater_is_refused(api, two_raters):
    _, a, b = two_raters
    from worker.survey_models import SurveyPair

    with api.app.state.sessions() as s:
        unassigned = [p.id for p in s.scalars(select(SurveyPair)) if p.id not in (a.pair_id, b.pair_id)]
    assert unassigned
    _refused(api, a, {"csrf": a.csrf, "pair": unassigned[0], "answer": "left"}, 403, "not assigned to you")
    if b.pair_id != a.pair_id:
        _refused(api, a, {"csrf": a.csrf, "pair": b.pair_id, "answer": "left"}, 403, "not assigned to you")
    _refused(api, a, {"csrf": a.csrf, "pair": "no-such-pair", "answer": "left"}, 403, "not assigned to you")


def test_a_vote_without_a_valid_csrf_token_is_refused(api, two_raters):
    _, a, b = two_raters
    _refused(api, a, {"pair": a.pair_id, "answer": "left"}, 403, "CSRF")
    _refused(api, a, {"csrf": b.csrf, "pair": a.pair_id, "answer": "left"}, 403, "CSRF token does not match")
    # A cross-site form arrives without the rater's cookie.
    stranger = TestClient(api.app)
    before = snapshot(api.settings)
    r = stranger.post(f"/s/{a.study_id}/vote", data={"csrf": a.csrf, "pair": a.pair_id, "answer": "left"})
    assert r.status_code == 403 and "cookie" in r.text and snapshot(api.settings) == before


def test_a_vote_on_a_closed_study_is_refused(api, two_raters):
    study, a, _ = two_raters
    closed = api.post(f"/v1/surveys/{study['id']}/close", headers=api.hdr).json()
    assert closed["status"] == "closed" and closed["closed_at"]
    _refused(api, a, {"csrf": a.csrf, "pair": a.pair_id, "answer": "left"}, 409, "study is closed")
    assert a.load().status_code == 410
    assert TestClient(api.app).get(f"/s/{study['id']}").status_code == 410


def test_finished_raters_keep_their_completion_code_after_closing(api):
    study = open_study(api, api.key, num_pairs=2, completion_code="KEEP-ME")
    rater = Rater.new(api.app, study["id"]).start()
    rater.finish()
    api.post(f"/v1/surveys/{study['id']}/close", headers=api.hdr)
    for path in ("", "/pair", "/done"):
        r = rater.client.get(f"/s/{study['id']}{path}")
        assert r.status_code == 200 and "KEEP-ME" in r.text, path


def test_a_vote_before_the_images_loaded_or_malformed_is_refused(api, two_raters):
    _, a, _ = two_raters
    base = {"csrf": a.csrf, "pair": a.pair_id}
    _refused(api, a, {**base, "answer": "left", "loaded": "0"}, 422, "had not finished loading")
    _refused(api, a, {**base, "answer": "up"}, 422, "answer must be one of")
    _refused(api, a, {**base, "answer": "left", "loaded": "1", "client_ms": "-5"}, 422, "response time")


def _assigned_earlier(api, seconds: float) -> None:
    """Move every open assignment's start back, as if the rater had looked at the pair that long."""
    from datetime import timedelta

    from worker.survey_models import Assignment

    with db.session_scope(api.settings.database_url) as s:
        for row in s.scalars(select(Assignment).where(Assignment.answered_at.is_(None))):
            row.assigned_at = row.assigned_at - timedelta(seconds=seconds)


def test_timing_loading_and_the_too_fast_flag_are_recorded(api, two_raters):
    _, a, _ = two_raters
    a.vote("right", loaded="1", load_ms="120", client_ms="250", input="key")
    _assigned_earlier(api, 5.0)
    a.vote("same", loaded="1", load_ms="80", client_ms="1900", input="click")
    fast, slow = _votes(api)
    assert (fast.images_loaded, fast.load_ms, fast.client_ms, fast.input, fast.too_fast) == (True, 120, 250, "key", True)
    assert (slow.client_ms, slow.input, slow.too_fast) == (1900, "click", False)
    assert slow.response_ms == 1900


def test_the_too_fast_flag_trusts_the_servers_clock_not_the_clients(api, two_raters):
    # Issue 11: a script that answers at once and reports a slow, human-looking time is still flagged.
    _, a, _ = two_raters
    a.vote("left", loaded="1", load_ms="90", client_ms="4000", input="click")
    (vote,) = _votes(api)
    assert vote.client_ms == 4000 and vote.server_ms < 3000 and vote.too_fast is True


# -- attention checks, exports, statistics ------------------------------------------------------------------

def test_attention_checks_flag_and_exclude_careless_raters(api):
    """An explicit check ("choose Left") ends a careless rater's session at once, with the screen-out code,
    out of the statistics and the completion counts; a one-sided rater who follows the checks is flagged."""
    import csv
    import io

    study = open_study(api, api.key, num_pairs=4, attention_checks=True, attention_checks_per_rater=2,
                       min_answer_ms=0, flag_min_answers=3, raters_per_pair=3)
    sid = study["id"]
    assert [study["exits"][k]["code"] for k in ("completed", "failed_checks")] == [
        study["completion_code"], study["exits"]["failed_checks"]["code"]]
    careful = Rater.new(api.app, sid).start()
    careful.finish(lambda i, pair: ["left", "right", "same"][i % 3])
    assert careful.outcome == "completed"
    one_sided = Rater.new(api.app, sid).start()
    one_sided.finish(lambda i, pair: "left")
    assert one_sided.outcome == "completed"
    careless = Rater.new(api.app, sid).start()
    careless.finish(lambda i, pair: "same", follow_checks=False)  # "Same" to everything, checks included
    assert careless.outcome == "failed_checks" and not careless.completed
    assert study["exits"]["failed_checks"]["code"] in careless.page
    # Their session is over: the pair page sends them to their exit, and no further answer counts.
    assert careless.load().url.path.endswith("/done") and 'data-outcome="failed_checks"' in careless.page

    status = api.get(f"/v1/surveys/{sid}", headers=api.hdr).json()
    careless_real = len([v for v in careless.history if v["status"] == 200]) - 1  # the failed check
    assert status["failed_attention_raters"] == 1 and status["raters_excluded"] == 1
    assert status["raters"] == 3 and status["raters_completed"] == 2
    assert status["answers"] == 8 and status["answers_all"] == 8 + careless_real
    assert status["completion"] == round(8 / 12, 4)
    rows = api.get(f"/v1/surveys/{sid}/votes?format=json", headers=api.hdr).json()["votes"]
    check_rows = [r for r in rows if r["attention_check"]]
    assert sorted(r["check_answer"] for r in check_rows if r["attention_passed"]) == ["left", "left", "right", "right"]
    failed_rater = next(r["rater_id"] for r in check_rows if not r["attention_passed"])
    assert all(r["rater_failed_checks"] == (r["rater_id"] == failed_rater) for r in rows)

    stats = api.get(f"/v1/surveys/{sid}/results?n_boot=0", headers=api.hdr).json()
    assert stats["n_answers"] == 8 and stats["n_raters"] == 2  # the careless rater and the checks are out
    assert stats["exclusions"]["excluded_raters"] == [failed_rater]
    assert stats["study"]["manifest_sha256"] == status["manifest_sha256"]

    # The per-rater table: status, code given, checks, share of Same, flags.
    table = list(csv.DictReader(io.StringIO(api.get(f"/v1/surveys/{sid}/raters", headers=api.hdr).text)))
    by_id = {r["rater_id"]: r for r in table}
    bad = by_id[failed_rater]
    assert (bad["status"], bad["exclusion_reason"], bad["checks_failed"], bad["same_share"]) == (
        "excluded", "failed_checks", "1", "1.0")
    assert bad["exit_code"] == study["exits"]["failed_checks"]["code"]
    one_sided_rows = [r for r in table if "one_side" in r["flags"]]
    assert len(one_sided_rows) == 1 and one_sided_rows[0]["flags"] == "one_side"
    assert one_sided_rows[0]["status"] == "completed" and one_sided_rows[0]["left_answers"] == "4"
    assert one_sided_rows[0]["exit_code"] == study["completion_code"]
    # The careless rater is flagged for "Same" once they gave enough real answers before the check ended it.
    assert bad["flags"] == ("mostly_same" if careless_real >= 3 else "")
    assert not by_id[next(r for r in by_id if r not in (failed_rater, one_sided_rows[0]["rater_id"]))]["flags"]


def test_a_straight_liner_is_flagged_and_excluded_when_the_study_says_so(api):
    """With identical-image checks "Same" passes them, so an all-Same rater gets through the checks:
    the mostly_same flag catches them, and exclude_flags turns it into an exclusion."""
    study = open_study(api, api.key, num_pairs=5, attention_checks=True, attention_checks_per_rater=1,
                       attention_check_kind="identical", flag_min_answers=4, exclude_flags=["mostly_same"],
                       min_answer_ms=0)
    from worker.survey_models import SurveyPair

    sid = study["id"]
    assert "same image on both sides" in TestClient(api.app).get(f"/s/{sid}").text
    with api.app.state.sessions() as s:
        checks = set(s.scalars(select(SurveyPair.id).where(SurveyPair.is_attention_check.is_(True))))
    lazy = Rater.new(api.app, sid).start()
    lazy.finish(lambda i, pair: "same")
    assert lazy.outcome == "completed"  # the checks were passed, so they see their completion code
    honest = Rater.new(api.app, sid).start()
    honest.finish(lambda i, pair: "same" if pair in checks else ["left", "right"][i % 2])
    assert honest.outcome == "completed"
    rows = api.get(f"/v1/surveys/{sid}/raters?format=json", headers=api.hdr).json()
    flagged = [r for r in rows["raters"] if r["flags"]]
    assert len(flagged) == 1 and "mostly_same" in flagged[0]["flags"] and flagged[0]["same_share"] == 1.0
    assert flagged[0]["status"] == "excluded" and flagged[0]["exclusion_reason"] == "flagged: mostly_same"
    assert rows["counts"]["excluded"] == 1 and rows["counts"]["excluded_by_reason"] == {"flagged: mostly_same": 1}
    stats = api.get(f"/v1/surveys/{sid}/results?n_boot=0", headers=api.hdr).json()
    assert stats["n_raters"] == 1 and stats["exclusions"]["n_votes_flagged"] == 6


def test_exports_carry_sides_choices_and_read_back_into_the_statistics(api):
    from app.stats import parse_votes_csv

    study = open_study(api, api.key, num_pairs=3)
    for k in range(4):
        Rater.new(api.app, study["id"]).start().finish(lambda i, pair, k=k: ["left", "right", "same"][(i + k) % 3])
    sid = study["id"]
    csv_text = api.get(f"/v1/surveys/{sid}/votes", headers=api.hdr).text
    header, *lines = csv_text.strip().splitlines()
    assert len(lines) == 12 and "side,choice,a_side,left_method,right_method" in header
    for line in lines:
        row = dict(zip(header.split(","), line.split(",")))
        if row["side"] != "same":
            assert row["choice"] == row[f"{row['side']}_method"]
    tidy = api.get(f"/v1/surveys/{sid}/votes?format=tidy", headers=api.hdr).text
    assert len(parse_votes_csv(tidy)) == 12
    stats = api.get(f"/v1/surveys/{sid}/results?n_boot=0", headers=api.hdr).json()
    assert stats["n_answers"] == 12 and stats["n_pairs"] == 3
    report = api.get(f"/v1/surveys/{sid}/report?n_boot=0", headers=api.hdr)
    assert report.status_code == 200 and "<svg" in report.text
    # Issue 11: served with a policy that runs no script and a type the browser may not second-guess.
    assert "script-src" not in report.headers["content-security-policy"]
    assert "default-src 'none'" in report.headers["content-security-policy"]
    assert report.headers["x-content-type-options"] == "nosniff"


def test_results_before_any_vote_say_why(api):
    study = open_study(api, api.key, num_pairs=2)
    r = api.get(f"/v1/surveys/{study['id']}/results", headers=api.hdr)
    assert r.status_code == 409 and "no votes" in r.json()["detail"]


# -- researcher pages --------------------------------------------------------------------------------------

def test_researcher_pages_sign_in_show_status_and_close(api):
    study = open_study(api, api.key, num_pairs=2, title="Tiny check", raters_per_pair=5)
    Rater.new(api.app, study["id"]).start().vote("left")
    sid = study["id"]
    web = TestClient(api.app)
    page = web.get(f"/researcher/surveys/{sid}")
    assert page.url.path == "/researcher/login"
    bad = web.post("/researcher/login", data={"api_key": "rg_wrong", "next": "/researcher/surveys"})
    assert bad.status_code == 401 and "not recognised" in bad.text
    assert web.get(f"/v1/surveys/{sid}").status_code == 401
    r = web.post("/researcher/login", data={"api_key": api.key, "next": f"/researcher/surveys/{sid}"})
    assert r.status_code == 200 and "Tiny check" in r.text
    assert "<span class=\"n\">1</span> of 10 usable answers" in r.text and r.headers["refresh"] == "10"
    # Every exit's code is listed for registering on the platform.
    for code in (e["code"] for e in study["exits"].values()):
        assert f"<code>{code}</code>" in r.text
    # Preference counts stay hidden while collecting, unless asked for.
    assert 'id="preferences-hidden"' in r.text and "<th>robust</th>" not in r.text
    assert "<th>robust</th>" in web.get(f"/researcher/surveys/{sid}?preferences=1").text
    assert api.get(f"/v1/surveys/{sid}", headers=api.hdr).json()["pairs"][0]["choices"] is None
    assert api.get(f"/v1/surveys/{sid}?preferences=true", headers=api.hdr).json()["pairs"][0]["choices"] is not None
    assert "Tiny check" in web.get("/researcher/surveys").text
    # The links on the page work with the session cookie.
    for link in ("results?n_boot=0", "votes", "votes?format=tidy", "manifest", "raters", "raters?format=json",
                 "table2", "table2?format=latex"):
        assert web.get(f"/v1/surveys/{sid}/{link}").status_code == 200, link
    # Closing asks first; the confirmation's form needs the page's CSRF token.
    confirm = web.get(f"/researcher/surveys/{sid}/close")
    assert confirm.status_code == 200 and "Close \u201cTiny check\u201d?" in confirm.text and "reopen" in confirm.text
    refused = web.post(f"/researcher/surveys/{sid}/close", data={})
    assert refused.status_code == 403 and api.get(f"/v1/surveys/{sid}", headers=api.hdr).json()["status"] == "open"
    closed = web.post(f"/researcher/surveys/{sid}/close", data={"csrf": field_value(confirm.text, "csrf")})
    assert closed.status_code == 200 and "badge closed" in closed.text and 'id="reopen-study"' in closed.text
    # Reopened: open again, and the report lists it.
    reopened = web.post(f"/researcher/surveys/{sid}/reopen", data={"csrf": field_value(closed.text, "csrf")})
    assert reopened.status_code == 200 and "badge open" in reopened.text and "reopened" in reopened.text
    # Signing out ends the session; a revoked key ends it too.
    web.post("/researcher/logout")
    assert web.get(f"/v1/surveys/{sid}").status_code == 401


def test_caps_are_raised_never_lowered_and_every_change_is_logged(api):
    study = open_study(api, api.key, num_pairs=2, raters_per_pair=1, pairs_per_rater=1)
    sid = study["id"]
    for _ in range(2):
        Rater.new(api.app, sid).start().finish()
    late = TestClient(api.app)
    assert 'data-outcome="full"' in late.get(f"/s/{sid}").text
    r = api.patch(f"/v1/surveys/{sid}", json={"raters_per_pair": 0}, headers=api.hdr)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "raters_per_pair"]
    lowered = api.patch(f"/v1/surveys/{sid}", json={"pairs_per_rater": 1, "raters_per_pair": 1}, headers=api.hdr)
    assert lowered.status_code == 200 and lowered.json()["amendments"] == []  # nothing changed
    r = api.patch(f"/v1/surveys/{sid}", json={"raters_per_pair": 2, "pairs_per_rater": 5}, headers=api.hdr)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["raters_per_pair"], body["pairs_per_rater"]) == (2, 2)  # at most every pair
    assert [(m["field"], m["old"], m["new"]) for m in body["amendments"]] == [
        ("raters_per_pair", 1, 2), ("pairs_per_rater", 1, 2)]
    # Room again: a new rater takes part, and sees both pairs.
    assert Rater.new(api.app, sid).start().finish() == 2
    # Lowering is refused; the page says why.
    r = api.patch(f"/v1/surveys/{sid}", json={"raters_per_pair": 1}, headers=api.hdr)
    assert r.status_code == 422 and "only be raised" in r.json()["detail"][0]["msg"]
    # The manifest is untouched by it all.
    assert api.get(f"/v1/surveys/{sid}/manifest", headers=api.hdr).json()["settings"]["raters_per_pair"] == 1


def test_a_revoked_key_ends_researcher_sessions(api):
    from app.keys import revoke_key

    web = TestClient(api.app)
    web.post("/researcher/login", data={"api_key": api.key})
    assert web.get("/v1/surveys").status_code == 200
    with db.session_scope(api.settings.database_url) as s:
        revoke_key(s, api.key[:10])
    assert web.get("/v1/surveys").status_code == 401


def test_login_never_redirects_off_site(api):
    web = TestClient(api.app)
    r = web.post("/researcher/login", data={"api_key": api.key, "next": "//evil.example/x"},
                 follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/researcher/surveys"
