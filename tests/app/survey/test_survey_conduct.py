"""Running a study on a crowd platform, in-process (issue 15): blinding beyond the page, every exit with
its code, platform ids carried in every link, MTurk, slots released, exclusion, deletion, the report."""
from __future__ import annotations

import base64
import csv
import io
import logging
import re
import struct
import zlib
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from survey_support import Rater, create_study, field_value, form_action, new_key, open_study, survey_api

from worker import db

PID = "5f1a2b3c4d5e6f7a8b9c0d1e"
PROLIFIC = {"PROLIFIC_PID": PID, "STUDY_ID": "pstudy1", "SESSION_ID": "psess1"}
MTURK_HOST = "https://workersandbox.mturk.com"


@pytest.fixture
def api(tmp_path):
    with survey_api(tmp_path) as client:
        yield client


def _png_chunks(data: bytes) -> list[bytes]:
    out, i = [], 8
    while i < len(data):
        length, kind = struct.unpack(">I4s", data[i:i + 8])
        out.append(kind)
        i += 12 + length
    return out


def _pixels(data: bytes) -> bytes:
    """The decoded image data of a PNG (what a rater would compare), whatever its metadata."""
    idat, i = b"", 8
    while i < len(data):
        length, kind = struct.unpack(">I4s", data[i:i + 8])
        if kind == b"IDAT":
            idat += data[i + 8:i + 8 + length]
        i += 12 + length
    return zlib.decompress(idat)


# -- 1. blinding beyond the page ------------------------------------------------------------------------------

def test_a_rater_without_a_key_cannot_unblind_the_pairs(api):
    """The attack of issue 15: list the generations, download the originals (their text chunks name the
    method), match their pixels with the images on screen. Every public door is tried."""
    from worker.models import Image, Job

    study = open_study(api, api.key, num_pairs=2)
    unrelated = api.post("/v1/generations", json={"preset": "tiny", "guidance": "robust", "class_labels": [1],
                                                  "steps": "ddim4"}).json()  # an ordinary, public job
    with api.app.state.sessions() as s:
        study_jobs = list(s.scalars(select(Job.id).where(Job.study_id == study["id"])))
        study_images = list(s.scalars(select(Image.id).join(Job, Job.id == Image.job_id)
                                      .where(Job.study_id == study["id"])))
    assert study_jobs and study_images
    rater = Rater.new(api.app, study["id"]).start()
    attacker = rater.client  # the rater's own browser: their cookie, no key
    other_lab = {"Authorization": f"Bearer {new_key(api.settings, 'other lab')}"}

    for headers in ({}, other_lab):
        listed = [j["id"] for j in attacker.get("/v1/generations?limit=100", headers=headers).json()["items"]]
        assert not set(listed) & set(study_jobs)
        for status in ("queued", "succeeded"):
            page = attacker.get(f"/v1/generations?limit=100&status={status}", headers=headers).json()["items"]
            assert not {j["id"] for j in page} & set(study_jobs)
        for job_id in study_jobs:
            for path in ("", "/events"):
                assert attacker.get(f"/v1/generations/{job_id}{path}", headers=headers).status_code == 404
            assert attacker.post(f"/v1/generations/{job_id}/cancel", headers=headers).status_code == 404
        for image_id in study_images:
            assert attacker.get(f"/v1/images/{image_id}.png", headers=headers).status_code == 404
        for path in ("", "/manifest", "/votes", "/results", "/report", "/raters", "/table2"):
            assert attacker.get(f"/v1/surveys/{study['id']}{path}", headers=headers).status_code in (401, 404)
    assert unrelated["id"] in [j["id"] for j in attacker.get("/v1/generations").json()["items"]]
    spec = attacker.get("/openapi.json").text
    assert not any(i in spec for i in study_jobs + study_images)

    # What the rater does get: their own two images, without any metadata, at URLs that say nothing.
    shown = []
    for side in ("left", "right"):
        src = re.search(rf'id="img-{side}" src="([^"]+)"', rater.page).group(1)
        assert "robust" not in src and "vanilla" not in src and not any(i in src for i in study_images)
        png = attacker.get(src).content
        assert set(_png_chunks(png)) <= {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"sRGB", b"gAMA", b"cHRM",
                                         b"iCCP", b"sBIT"}
        assert b"robust" not in png and b"vanilla" not in png
        shown.append(png)
    # The researcher (owner key) still sees everything: the originals carry their recipe.
    with api.app.state.sessions() as s:
        pair = s.get(__import__("worker.survey_models", fromlist=["SurveyPair"]).SurveyPair, rater.pair_id)
        originals = [api.get(f"/v1/images/{i}.png", headers=api.hdr).content for i in (pair.image_a_id, pair.image_b_id)]
    assert all(b"tEXt" in o for o in originals)
    assert sorted(_pixels(p) for p in shown) == sorted(_pixels(o) for o in originals)
    assert api.get(f"/v1/generations/{study_jobs[0]}", headers=api.hdr).status_code == 200
    assert study_jobs[0] in [j["id"] for j in api.get("/v1/generations?limit=100", headers=api.hdr).json()["items"]]


def test_blinding_also_holds_when_generation_requires_a_key(tmp_path):
    with survey_api(tmp_path, generation_requires_key=True) as api:
        study = create_study(api, api.key, num_pairs=1)
        other = {"Authorization": f"Bearer {new_key(api.settings, 'lab b')}"}
        listed = api.get("/v1/generations", headers=other).json()["items"]
        assert listed == []
        mine = api.get("/v1/generations", headers=api.hdr).json()["items"]
        assert len(mine) == 1 and api.get(f"/v1/surveys/{study['id']}", headers=other).status_code == 404


# -- 2. every exit path ---------------------------------------------------------------------------------------

def _exit_of(page: str) -> tuple[str, str | None, str | None]:
    outcome = re.search(r'data-outcome="([a-z_]+)"', page).group(1)
    code = re.search(r'id="(?:completion|exit)-code">([^<]+)<', page)
    link = re.search(r'id="return-link" href="([^"]+)"', page)
    return outcome, code.group(1) if code else None, link.group(1).replace("&amp;", "&") if link else None


def test_every_exit_gives_its_code_and_a_link_back_to_prolific(api):
    exits_given = {"no_consent": {"code": "NOCONSENT1"}, "full": {"code": "FULL0001"},
                   "closed": {"code": "CLOSED01", "url": "https://example.org/closed"}}
    study = create_study(api, api.key, num_pairs=2, raters_per_pair=1, platform="prolific", exits=exits_given,
                         completion_code="DONE-0001")
    sid = study["id"]
    codes = {k: v["code"] for k, v in study["exits"].items()}
    assert codes["no_consent"] == "NOCONSENT1" and codes["completed"] == "DONE-0001"
    assert len(set(codes.values())) == len(codes)  # the random ones are distinct too
    prolific = "https://app.prolific.com/submissions/complete?cc="
    assert study["exits"]["full"]["url"] == prolific + "FULL0001"
    assert study["exits"]["closed"]["url"] == "https://example.org/closed"

    # Not open yet: the code, a link back, and "Try again" keeping the participant's ids.
    early = TestClient(api.app)
    r = early.get(f"/s/{sid}", params=PROLIFIC)
    assert r.status_code == 503 and _exit_of(r.text) == ("not_open", codes["not_open"], prolific + codes["not_open"])
    again = re.search(r'href="([^"]+)">Try again', r.text).group(1).replace("&amp;", "&")
    assert parse_qs(urlsplit(again).query)["PROLIFIC_PID"] == [PID]

    from survey_support import run_queued_jobs

    run_queued_jobs(api.settings)
    # "I do not consent": its own code, and nothing stored about them.
    r = early.get(f"/s/{sid}", params=PROLIFIC)
    assert 'id="decline"' in r.text
    r = early.post(form_action(r.text), data={"csrf": field_value(r.text, "csrf"), "consent": "no"})
    assert _exit_of(r.text) == ("no_consent", "NOCONSENT1", prolific + "NOCONSENT1")
    assert api.get(f"/v1/surveys/{sid}/raters?format=json", headers=api.hdr).json()["raters"] == []

    # Completed, then the study is full for the next one.
    done = Rater.new(api.app, sid).start(**PROLIFIC)
    done.finish()
    assert _exit_of(done.page) == ("completed", "DONE-0001", prolific + "DONE-0001")
    r = TestClient(api.app).get(f"/s/{sid}", params={"PROLIFIC_PID": "someoneelse001"})
    assert _exit_of(r.text) == ("full", "FULL0001", prolific + "FULL0001")

    # Closed mid-way (a rater who has answered) versus closed before starting.
    api.patch(f"/v1/surveys/{sid}", json={"raters_per_pair": 3}, headers=api.hdr)
    midway = Rater.new(api.app, sid).start(PROLIFIC_PID="midway00000001")
    midway.vote("left")
    api.post(f"/v1/surveys/{sid}/close", headers=api.hdr)
    r = midway.load()
    assert r.status_code == 410 and _exit_of(r.text)[:2] == ("closed_midway", codes["closed_midway"])
    assert "Your 1 answers were recorded" in r.text
    r = TestClient(api.app).get(f"/s/{sid}", params={"PROLIFIC_PID": "latecomer00001"})
    assert r.status_code == 410 and _exit_of(r.text) == ("closed", "CLOSED01", "https://example.org/closed")
    # The finished rater keeps their code after closing.
    assert _exit_of(done.client.get(f"/s/{sid}/done").text)[1] == "DONE-0001"
    table = api.get(f"/v1/surveys/{sid}/raters?format=json", headers=api.hdr).json()["raters"]
    assert {r["participant"]: (r["outcome"], r["exit_code"]) for r in table} == {
        f"prolific:{PID}": ("completed", "DONE-0001"),
        "prolific:midway00000001": ("closed_midway", codes["closed_midway"])}


def test_no_pairs_left_and_the_completion_redirect(api):
    study = open_study(api, api.key, num_pairs=1, raters_per_pair=1, completion_redirect=True,
                       completion_url="https://example.org/thanks?cc=ABC")
    sid = study["id"]
    # Two raters consent while there is room; the second reaches the pair page first and takes the only
    # pair, so the first finds none left.
    late, first = Rater.new(api.app, sid), Rater.new(api.app, sid)
    page = late.client.get(f"/s/{sid}").text
    r = late.client.post(form_action(page), data={"csrf": field_value(page, "csrf"), "consent": "yes"},
                         follow_redirects=False)
    assert r.status_code == 303
    first.start()
    r = late.client.get(r.headers["location"])
    assert _exit_of(r.text)[:2] == ("no_pairs", study["exits"]["no_pairs"]["code"])
    # A completion redirect: the page sends the rater on by itself (a meta refresh: a form's CSP
    # form-action would block a redirect chain leaving the site), and still shows the code.
    first.finish()
    assert '<meta http-equiv="refresh" content="1; url=https://example.org/thanks?cc=ABC">' in first.page
    assert _exit_of(first.page)[1] == study["completion_code"]


def test_platform_ids_travel_in_every_link_and_a_device_switch_keeps_one_rater(api):
    study = open_study(api, api.key, num_pairs=4)
    sid = study["id"]
    phone = Rater.new(api.app, sid).start(**PROLIFIC)
    for url in (phone.url, form_action(phone.page, "vote-form"),
                re.search(r'id="img-left" src="([^"]+)"', phone.page).group(1).replace("&amp;", "&")):
        assert parse_qs(urlsplit(url).query)["PROLIFIC_PID"] == [PID], url
    phone.vote("left")
    here = phone.pair_id
    # A refused answer's "Back to the survey" keeps the ids too.
    refused = phone.client.post(form_action(phone.page, "vote-form"), data={"csrf": "forged", "pair": here,
                                                                            "answer": "left"})
    back = re.search(r'href="([^"]+)">Back to the survey', refused.text).group(1).replace("&amp;", "&")
    assert parse_qs(urlsplit(back).query)["PROLIFIC_PID"] == [PID]
    # Another device (no cookie) opens a link copied from the survey, not the study link: same rater, same pair.
    laptop = Rater.new(api.app, sid)
    r = laptop.client.get(phone.url)
    laptop.page, laptop.url = r.text, str(r.url)
    assert laptop.pair_id == here
    laptop.finish()
    table = api.get(f"/v1/surveys/{sid}/raters?format=json", headers=api.hdr).json()
    assert table["counts"]["recruited"] == 1
    (row,) = table["raters"]
    assert (row["participant"], row["platform_study_id"], row["platform_session_id"], row["answers"]) == (
        f"prolific:{PID}", "pstudy1", "psess1", 4)


def test_a_browser_without_cookies_takes_part_through_its_token(api):
    study = open_study(api, api.key, num_pairs=2)
    sid = study["id"]
    client = TestClient(api.app)
    page = client.get(f"/s/{sid}")
    client.cookies.clear()  # the browser refuses to keep cookies
    r = client.post(form_action(page.text), data={"csrf": field_value(page.text, "csrf"), "consent": "yes"})
    client.cookies.clear()
    assert "rs" in parse_qs(urlsplit(str(r.url)).query)
    rater = Rater(client, sid, page=r.text, url=str(r.url))
    src = re.search(r'id="img-left" src="([^"]+)"', r.text).group(1).replace("&amp;", "&")
    assert client.get(src).status_code == 200
    while not rater.done:
        assert rater.vote("right").status_code == 200
        client.cookies.clear()
    assert rater.completed
    assert api.get(f"/v1/surveys/{sid}", headers=api.hdr).json()["raters_completed"] == 1


def test_mturk_preview_accept_framing_and_submit(tmp_path):
    with survey_api(tmp_path, mturk_hosts=(MTURK_HOST, "https://worker.mturk.com")) as api:
        study = open_study(api, api.key, num_pairs=2, platform="mturk")
        sid = study["id"]
        ids = {"assignmentId": "3ASSIGNMENT0001", "hitId": "3HIT000001", "workerId": "A1WORKER0001",
               "turkSubmitTo": MTURK_HOST}
        browser = TestClient(api.app)
        preview = browser.get(f"/s/{sid}", params={"assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE", "hitId": "3HIT1"})
        assert 'id="preview-note"' in preview.text and 'id="start"' not in preview.text
        csp = preview.headers["content-security-policy"]
        assert f"frame-ancestors {MTURK_HOST} https://worker.mturk.com" in csp
        bad = browser.get(f"/s/{sid}", params={**ids, "turkSubmitTo": "https://evil.example"})
        assert bad.status_code == 400 and "turkSubmitTo" in bad.text
        # Accepted: inside MTurk's iframe no cookie comes back; the ids and the token carry the rater.
        page = browser.get(f"/s/{sid}", params=ids)
        browser.cookies.clear()
        r = browser.post(form_action(page.text), data={"csrf": field_value(page.text, "csrf"), "consent": "yes"})
        rater = Rater(browser, sid, page=r.text, url=str(r.url))
        while not rater.done:
            browser.cookies.clear()
            assert rater.vote("left").status_code == 200
        form = re.search(r'<form method="post" action="([^"]+)" id="mturk-submit">(.*?)</form>', rater.page, re.S)
        assert form.group(1) == f"{MTURK_HOST}/mturk/externalSubmit"
        fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form.group(2)))
        assert fields == {"assignmentId": "3ASSIGNMENT0001", "outcome": "completed", "code": study["completion_code"]}
        done = browser.get(urlsplit(rater.url).path + "?" + urlsplit(rater.url).query)
        assert f"form-action 'self' {MTURK_HOST}" in done.headers["content-security-policy"]
        (row,) = api.get(f"/v1/surveys/{sid}/raters?format=json", headers=api.hdr).json()["raters"]
        assert (row["participant"], row["source"], row["platform_session_id"], row["platform_study_id"],
                row["submit_to"]) == ("mturk:A1WORKER0001", "mturk", "3ASSIGNMENT0001", "3HIT000001", MTURK_HOST)
        # A study not on MTurk is never framed.
        plain = open_study(api, api.key, num_pairs=1)
        assert "frame-ancestors 'none'" in browser.get(f"/s/{plain['id']}").headers["content-security-policy"]


# -- 3. slots: released after the time-out, by exclusion; given back on inclusion --------------------------------

def _age_open_assignments(api, seconds: float) -> None:
    from worker.survey_models import Assignment

    with db.session_scope(api.settings.database_url) as s:
        for row in s.scalars(select(Assignment).where(Assignment.answered_at.is_(None))):
            row.assigned_at = row.assigned_at - timedelta(seconds=seconds)


def _live(api, sid):
    return {p["pair_id"]: p["live"] for p in api.get(f"/v1/surveys/{sid}", headers=api.hdr).json()["pairs"]}


def test_an_abandoned_pair_goes_back_to_the_pool_after_the_time_out(api):
    study = open_study(api, api.key, num_pairs=2, raters_per_pair=1, assignment_timeout_seconds=60)
    sid = study["id"]
    quitter = Rater.new(api.app, sid).start()
    held = quitter.pair_id
    other = Rater.new(api.app, sid).start()
    assert other.pair_id != held  # the held pair is full
    other.vote("left")
    assert 'data-outcome="completed"' in other.page  # the held pair was not free
    assert 'data-outcome="full"' in TestClient(api.app).get(f"/s/{sid}").text
    _age_open_assignments(api, 61)
    # Past the time-out the slot is free again: a new rater gets the pair the quitter held.
    newcomer = Rater.new(api.app, sid).start()
    assert newcomer.pair_id == held
    assert _live(api, sid)[held] == 1
    # The quitter comes back: the pair is taken, so their answer to it does not count...
    r = quitter.vote("right")
    assert r.status_code == 409 and "given to another participant" in r.text
    # ...and they continue with what is left (nothing here: they get the no-pairs exit).
    quitter.load()
    assert 'data-outcome="no_pairs"' in quitter.page
    newcomer.finish()
    table = {r["rater_id"]: r for r in api.get(f"/v1/surveys/{sid}/raters?format=json",
                                               headers=api.hdr).json()["raters"]}
    assert sorted(r["status"] for r in table.values()) == ["completed", "completed", "no_pairs"]
    assert sum(r["released_assignments"] for r in table.values()) == 0  # the released claim was dropped


def test_a_returning_rater_gets_their_pair_back_if_it_still_has_room(api):
    study = open_study(api, api.key, num_pairs=2, raters_per_pair=2, assignment_timeout_seconds=60)
    sid = study["id"]
    slow = Rater.new(api.app, sid).start()
    held = slow.pair_id
    _age_open_assignments(api, 120)
    assert _live(api, sid)[held] == 0  # released (the status read runs the release)
    assert slow.vote("left").status_code == 200  # taken back: the pair still had room
    assert _live(api, sid)[held] == 1
    rows = api.get(f"/v1/surveys/{sid}/votes?format=json", headers=api.hdr).json()["votes"]
    assert [r["pair_id"] for r in rows] == [held]


def test_excluding_a_rater_reopens_their_slots_and_including_them_takes_them_back(api):
    study = open_study(api, api.key, num_pairs=2, raters_per_pair=1)
    sid = study["id"]
    first = Rater.new(api.app, sid).start()
    first.finish()
    assert 'data-outcome="full"' in TestClient(api.app).get(f"/s/{sid}").text
    rater_id = api.get(f"/v1/surveys/{sid}/raters?format=json", headers=api.hdr).json()["raters"][0]["rater_id"]
    r = api.post(f"/v1/surveys/{sid}/raters/{rater_id}/exclude", json={"reason": "bot-like"}, headers=api.hdr)
    assert r.status_code == 200 and r.json()["reason"] == "researcher: bot-like"
    status = api.get(f"/v1/surveys/{sid}", headers=api.hdr).json()
    assert status["answers"] == 0 and status["answers_all"] == 2 and status["raters_completed"] == 0
    assert set(_live(api, sid).values()) == {0}
    second = Rater.new(api.app, sid).start()
    assert second.finish() == 2
    stats = api.get(f"/v1/surveys/{sid}/results?n_boot=0", headers=api.hdr).json()
    assert stats["n_raters"] == 1 and stats["exclusions"]["n_votes_flagged"] == 2
    assert api.post(f"/v1/surveys/{sid}/raters/{rater_id}/include", headers=api.hdr).json()["changed"] is True
    assert set(_live(api, sid).values()) == {2}  # over the cap: their answers count again
    assert api.get(f"/v1/surveys/{sid}", headers=api.hdr).json()["answers"] == 4
    assert api.post(f"/v1/surveys/{sid}/raters/{'0' * 32}/exclude", headers=api.hdr).status_code == 404


# -- 4. the per-rater export, deletion on request ---------------------------------------------------------

def test_the_per_rater_export_has_what_an_approval_needs(api):
    from app.survey.quality import RATER_COLUMNS

    study = open_study(api, api.key, num_pairs=3, attention_checks=True, attention_checks_per_rater=1,
                       platform="prolific", min_answer_ms=60000, flag_min_answers=2)
    sid = study["id"]
    Rater.new(api.app, sid).start(**PROLIFIC).finish(lambda i, pair: "same")  # the check is followed
    r = api.get(f"/v1/surveys/{sid}/raters", headers=api.hdr)
    assert r.headers["content-type"].startswith("text/csv") and "attachment" in r.headers["content-disposition"]
    (row,) = list(csv.DictReader(io.StringIO(r.text)))
    assert tuple(row) == RATER_COLUMNS
    assert row["participant"] == f"prolific:{PID}" and row["platform_session_id"] == "psess1"
    assert row["status"] == "completed" and row["exit_code"] == study["completion_code"]
    assert row["consented_at"] and row["finished_at"] and float(row["duration_s"]) >= 0
    assert (row["answers"], row["real_answers"], row["checks_answered"], row["checks_failed"]) == ("4", "3", "1", "0")
    assert row["same_share"] == "1.0" and row["fast_answers"] == "4" and row["left_answers"] == "0"
    assert row["flags"] == "mostly_same;too_fast" and row["user_agent"] == "testclient"


def test_a_participant_can_have_their_data_deleted(api):
    study = open_study(api, api.key, num_pairs=2, raters_per_pair=1)
    sid = study["id"]
    Rater.new(api.app, sid).start(**PROLIFIC).finish()
    assert api.delete(f"/v1/surveys/{sid}/participants/nobody", headers=api.hdr).status_code == 404
    assert api.delete(f"/v1/surveys/{sid}/participants/{PID}", headers=api.hdr).status_code == 204
    body = api.get(f"/v1/surveys/{sid}", headers=api.hdr).json()
    assert body["raters"] == 0 and body["answers_all"] == 0 and set(_live(api, sid).values()) == {0}
    assert [m["action"] for m in body["amendments"]] == ["participant data deleted on request"]
    assert PID not in str(body["amendments"])
    assert api.get(f"/v1/surveys/{sid}/votes?format=json", headers=api.hdr).json()["votes"] == []


# -- 5. consent that matches what is recorded -----------------------------------------------------------------

def test_the_access_log_keeps_no_address_or_participant_id_for_survey_pages(api):
    from app.access_log import ACCESS_LOGGER, SurveyPrivacyFilter

    assert any(isinstance(f, SurveyPrivacyFilter) for f in logging.getLogger(ACCESS_LOGGER).filters)
    lines = []
    for path in (f"/s/abc?PROLIFIC_PID={PID}&rs=secret", "/v1/generations?limit=5"):
        record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                                   ("203.0.113.9:5555", "GET", path, "1.1", 200), None)
        assert SurveyPrivacyFilter().filter(record)
        lines.append(record.getMessage())
    assert lines == ['- - "GET /s/abc HTTP/1.1" 200', '203.0.113.9:5555 - "GET /v1/generations?limit=5 HTTP/1.1" 200']
    consent = TestClient(api.app).get(f"/s/{open_study(api, api.key, num_pairs=1)['id']}").text
    assert "user-agent" in consent and "no name, e-mail or IP address" in consent
    assert "access log keeps neither the address nor the link parameters" in consent
    assert "deleted" in consent


def test_the_site_root_is_a_plain_page(api):
    r = TestClient(api.app).get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/researcher/surveys" in r.text and "/docs" in r.text


# -- 6. a report for a paper ----------------------------------------------------------------------------------

def test_the_report_is_citable_and_whole_when_saved(api):
    study = open_study(api, api.key, num_pairs=3, raters_per_pair=5, attention_checks=True,
                       attention_checks_per_rater=1, platform="prolific")
    sid = study["id"]
    for k in range(3):
        Rater.new(api.app, sid).start(PROLIFIC_PID=f"participant{k:05d}").finish(
            lambda i, pair, k=k: ["left", "right", "same"][(i + k) % 3])
    Rater.new(api.app, sid).start(PROLIFIC_PID="careless00001").finish(lambda i, pair: "same", follow_checks=False)
    api.patch(f"/v1/surveys/{sid}", json={"raters_per_pair": 6}, headers=api.hdr)
    r = api.get(f"/v1/surveys/{sid}/report?n_boot=200", headers=api.hdr)
    html = r.text
    assert r.status_code == 200 and 'id="provisional"' in html and "still open" in html
    manifest_sha = api.get(f"/v1/surveys/{sid}", headers=api.hdr).json()["manifest_sha256"]
    for fact in (sid, manifest_sha, "A: robust (scale 1)", "B: vanilla (scale 0.5)", "ddim, ddim4", "tiny",
                 study["code_version"], "Prolific", "raters_per_pair changed from 5 to 6"):
        assert fact in html, fact
    counts = re.search(r'<table class="counts" id="rater-counts">(.*?)</table>', html, re.S).group(1)
    assert re.search(r"Recruited \(consented\)</td><td>4<", counts) and re.search(r"Excluded</td><td>1<", counts)
    assert "failed checks: 1" in counts and re.search(r"Analysed</td><td>3<", counts)
    methods = re.search(r'id="methods-paragraph">(.*?)</p>', html, re.S).group(1)
    assert "robust guidance (scale 1)" in methods and "same seed" in methods and manifest_sha in methods
    assert "Of 4 raters who consented, 1 was excluded (failed checks: 1)" in methods
    assert "raters who failed any check were excluded" in methods
    # Intervals in Table 2 and per class, in the HTML itself.
    table2 = re.search(r'id="table2">(.*?)</table>', html, re.S).group(1)
    assert len(re.findall(r'<span class="ci">\[', table2)) == 12
    assert re.search(r'id="per-class">.*?<span class="ci">\[', html, re.S)
    # Saved as a file, the page keeps its images: every image is embedded, nothing points at the server.
    images = re.findall(r'<img src="([^"]+)"', html)
    assert images and all(u.startswith("data:image/png;base64,") for u in images)
    assert base64.b64decode(images[0].split(",", 1)[1]).startswith(b"\x89PNG")
    assert not re.search(r'(?:src|href)="/', html)
    # Closed: no longer provisional.
    api.post(f"/v1/surveys/{sid}/close", headers=api.hdr)
    assert 'id="provisional"' not in api.get(f"/v1/surveys/{sid}/report?n_boot=0", headers=api.hdr).text
    tex = api.get(f"/v1/surveys/{sid}/table2?format=latex", headers=api.hdr)
    assert tex.status_code == 200 and r"\begin{tabular}" in tex.text


# -- the migration ---------------------------------------------------------------------------------------------

def test_migration_0005_fills_in_existing_studies(api, tmp_path):
    """A study stored under 0004 (its columns only): after 0005 its jobs are marked as the study's (hidden
    from the public API), its per-side live counts equal its assignments, its checks read as identical."""
    from sqlalchemy import MetaData, func, insert

    study = open_study(api, api.key, num_pairs=3, raters_per_pair=5, attention_checks=True,
                       attention_checks_per_rater=1, attention_check_kind="identical")
    for _ in range(2):
        Rater.new(api.app, study["id"]).start().finish()
    Rater.new(api.app, study["id"]).start().vote("left")  # one rater part-way
    old_url = f"sqlite:///{tmp_path / 'old.db'}"
    db.upgrade(old_url, "0004_study_access")
    old = MetaData()
    old.reflect(db.get_engine(old_url))
    new = db.get_engine(api.settings.database_url)
    with new.connect() as src, db.get_engine(old_url).begin() as dst:
        for table in old.sorted_tables:
            if table.name == "alembic_version":
                continue
            rows = [dict(r._mapping) for r in src.execute(select(db.Base.metadata.tables[table.name]))]
            if rows:
                dst.execute(insert(table), [{k: v for k, v in r.items() if k in table.c} for r in rows])
    db.upgrade(old_url)
    from worker.models import Job
    from worker.survey_models import Assignment, Study, SurveyPair

    with db.session_factory(old_url)() as s:
        assert {j.study_id for j in s.scalars(select(Job))} == {study["id"]}
        migrated = s.get(Study, study["id"])
        assert (migrated.platform, migrated.exit_codes, migrated.amendments, migrated.check_kind) == (
            "none", {}, [], "identical")
        for p in s.scalars(select(SurveyPair)):
            sides = list(s.scalars(select(Assignment.a_side).where(Assignment.pair_id == p.id)))
            assert (p.n_a_left, p.n_a_right) == (sides.count("left"), sides.count("right"))
            assert (p.check_kind, p.check_answer) == (("identical", "same") if p.is_attention_check else (None, None))
        assert s.scalar(select(func.count()).select_from(Assignment).where(Assignment.released_at.is_not(None))) == 0
    db.dispose_engines()


def test_the_researcher_pages_exclude_include_and_delete_a_rater(api):
    study = open_study(api, api.key, num_pairs=2, raters_per_pair=3)
    sid = study["id"]
    Rater.new(api.app, sid).start(**PROLIFIC).finish()
    web = TestClient(api.app)
    web.post("/researcher/login", data={"api_key": api.key})
    page = web.get(f"/researcher/surveys/{sid}/raters")
    assert page.status_code == 200 and f"prolific:{PID}" in page.text and 'id="raters-csv"' in page.text
    rater_id = re.search(r'id="rater-([0-9a-f]{32})"', page.text).group(1)
    csrf = field_value(page.text, "csrf")
    assert web.post(f"/researcher/surveys/{sid}/raters/{rater_id}/exclude", data={}).status_code == 403
    # Signed out, the sign-in check comes first: the sign-in page, whatever the form holds; nothing changes.
    stranger = TestClient(api.app)
    r = stranger.post(f"/researcher/surveys/{sid}/raters/{rater_id}/exclude", data={"csrf": csrf},
                      follow_redirects=False)
    assert r.status_code in (303, 307) and "/researcher/login" in r.headers["location"], r.status_code
    assert stranger.post(f"/researcher/surveys/{sid}/close", data={"csrf": csrf},
                         follow_redirects=False).status_code in (303, 307)
    assert "researcher: " not in web.get(f"/researcher/surveys/{sid}/raters").text
    r = web.post(f"/researcher/surveys/{sid}/raters/{rater_id}/exclude", data={"csrf": csrf, "reason": "test"})
    assert r.status_code == 200 and "researcher: test" in r.text and ">Include</button>" in r.text
    r = web.post(f"/researcher/surveys/{sid}/raters/{rater_id}/include", data={"csrf": csrf})
    assert ">Exclude</button>" in r.text
    confirm = web.get(f"/researcher/surveys/{sid}/raters/{rater_id}/delete")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    r = web.post(form_action(confirm.text), data={"csrf": field_value(confirm.text, "csrf")})
    assert r.status_code == 200 and "No rater has consented yet" in r.text
    # Caps from the study page's form; a lowered cap is refused with the reason.
    page = web.get(f"/researcher/surveys/{sid}")
    r = web.post(f"/researcher/surveys/{sid}/caps", data={"csrf": field_value(page.text, "csrf"),
                                                          "raters_per_pair": "4", "timeout_minutes": "30"})
    assert r.status_code == 200 and "raters_per_pair 3 &rarr; 4" in r.text
    body = api.get(f"/v1/surveys/{sid}", headers=api.hdr).json()
    assert (body["raters_per_pair"], body["assignment_timeout_seconds"]) == (4, 1800)
    r = web.post(f"/researcher/surveys/{sid}/caps", data={"csrf": field_value(page.text, "csrf"),
                                                          "raters_per_pair": "2"})
    assert r.status_code == 422 and "only be raised" in r.text
