"""The survey in headless Chromium, against `rguide up` with its embedded defaults.

`rguide up` runs as a user starts it (SQLite, the filesystem broker, a real
Celery worker process); only the data directory, the port and the default
preset are set through the environment. A researcher creates a study over
the API, the worker generates its pairs, and three raters take part in
separate browser contexts:

* a Prolific participant on a desktop, answering with clicks and keys and
  reloading mid-way;
* an anonymous rater on a phone-sized touch screen, who closes the page
  mid-way and comes back through the study link;
* a rater whose browser runs no JavaScript.

The database must then hold exactly the expected votes, with the sides
shown and clicked; every request the pages made must have gone to this
server. Screenshots of the pair page land in test-artifacts/.
"""
from __future__ import annotations

import httpx
import pytest
from sqlalchemy import create_engine, text
from survey_browser_support import ARTIFACTS, RaterBrowser, Recorder, browser, rguide_up  # noqa: F401 (fixtures)
from survey_browser_support import consent as _consent
from survey_browser_support import open_study as _open

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(400)]

PID = "60f1c0ffee0ddba11cafe001"


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    with rguide_up(tmp_path_factory.mktemp("survey-up")) as service:
        yield service


def _open_study(up) -> dict:
    return _open(up, title="Robust or vanilla?", num_pairs=4, seed=2023, raters_per_pair=3, attention_checks=True,
                 attention_checks_per_rater=1, min_answer_ms=0, completion_code="BROWSER-OK")


def test_two_raters_and_a_no_script_rater_complete_the_study_in_chromium(up, browser):
    study = _open_study(up)
    sid, link = study["id"], study["links"]["rater_url"]
    assert link == f"{up.url}/s/{sid}"
    ARTIFACTS.mkdir(exist_ok=True)
    expected: dict[str, dict[str, tuple[str, str]]] = {}
    recorders = []

    # 1. A Prolific participant on a desktop: clicks, arrow keys, digit keys, and a reload mid-way.
    desktop = browser.new_context(viewport={"width": 1200, "height": 860})
    recorders.append(Recorder(desktop))
    page = desktop.new_page()
    page.goto(f"{link}?PROLIFIC_PID={PID}&STUDY_ID=prolific-study&SESSION_ID=prolific-session")
    page.screenshot(path=str(ARTIFACTS / "survey-landing.png"), full_page=True)
    _consent(page)
    r1 = RaterBrowser(page, expected.setdefault(f"prolific:{PID}", {}))
    r1.ready()
    assert page.inner_text("#class-name").strip().lower() in ("red", "green", "blue", "grey")
    assert page.get_attribute("#progress", "value") == "0" and page.get_attribute("#progress", "max") == "5"
    page.screenshot(path=str(ARTIFACTS / "survey-pair.png"), full_page=True)
    r1.answer("click", "left")
    r1.answer("key", "right", "ArrowRight")
    before = r1.ready()
    page.reload()
    assert r1.ready() == before and page.get_attribute("#progress", "value") == "2"
    r1.answer("key", "same", "ArrowDown")
    r1.answer("key", "left", "1")
    r1.answer("click", "same")
    assert r1.done and page.inner_text("#completion-code").strip() == "BROWSER-OK"
    page.screenshot(path=str(ARTIFACTS / "survey-done.png"), full_page=True)

    # 2. An anonymous rater on a phone: taps and keys; leaves mid-way and comes back through the link.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                device_scale_factor=2)
    recorders.append(Recorder(phone))
    page = phone.new_page()
    page.goto(link)
    _consent(page, tap=True)
    r2 = RaterBrowser(page, {})
    r2.ready()
    page.screenshot(path=str(ARTIFACTS / "survey-pair-phone.png"), full_page=True)
    r2.answer("click", "right", tap=True)
    r2.answer("key", "right", "2")
    stopped_at = r2.ready()
    page.close()
    page = phone.new_page()
    page.goto(link)  # the signed cookie brings them back to the pair they left
    r2.page = page
    assert page.url.endswith(f"/s/{sid}/pair") and r2.ready() == stopped_at
    r2.answer("key", "same", "0")
    r2.answer("click", "left", tap=True)
    r2.answer("key", "right", "ArrowRight")
    assert r2.done
    anonymous_answers = r2.expected

    # 3. No JavaScript at all: plain form posts still work; loading and timing are recorded as unknown.
    plain = browser.new_context(java_script_enabled=False)
    recorders.append(Recorder(plain))
    page = plain.new_page()
    page.goto(link)
    _consent(page)
    r3 = RaterBrowser(page, {}, js=False)
    for side in ("left", "same", "right", "left", "same"):
        r3.answer("click", side)
    assert r3.done
    plain_answers = r3.expected
    for context in (desktop, phone, plain):
        context.close()

    # 4. The researcher signs in with the key, follows the study live and closes it.
    office = browser.new_context(viewport={"width": 1200, "height": 900})
    recorders.append(Recorder(office))
    page = office.new_page()
    page.goto(f"{up.url}/researcher/surveys/{sid}")
    assert "/researcher/login" in page.url
    page.fill("#api_key", up.key)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url.endswith(f"/researcher/surveys/{sid}")
    assert "3\nraters recruited (3 completed)" in page.inner_text("main")
    assert page.inner_text("#rater-url") == link
    page.screenshot(path=str(ARTIFACTS / "survey-researcher.png"), full_page=True)
    with page.expect_navigation():
        page.click("#close-study")  # asks first
    assert "Close \u201cRobust or vanilla?\u201d?" in page.inner_text("h1")
    page.screenshot(path=str(ARTIFACTS / "survey-researcher-close.png"), full_page=True)
    with page.expect_navigation():
        page.click("#confirm")
    assert page.locator(".badge.closed").count() == 1
    office.close()

    # Every request went to this server; nothing failed to load, nothing was blocked.
    for rec in recorders:
        assert rec.requests and all(u.startswith(up.url + "/") for u in rec.requests), rec.requests
        assert rec.problems == []

    # The database holds exactly these votes, with the sides shown and chosen.
    engine = create_engine(f"sqlite:///{up.data_dir / 'rguide.db'}")
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT r.external_id, r.completed_at, v.pair_id, v.side, v.choice, v.a_side, v.input, v.images_loaded,"
            " v.client_ms, v.load_ms, v.position, p.is_attention_check, p.check_method"
            " FROM survey_votes v JOIN survey_raters r ON r.id = v.rater_id JOIN survey_pairs p ON p.id = v.pair_id"
            " WHERE v.study_id = :sid ORDER BY v.created_at"), {"sid": sid}).mappings().all()
    engine.dispose()
    by_rater: dict[str, dict[str, dict]] = {}
    for row in rows:
        assert row["pair_id"] not in by_rater.setdefault(row["external_id"], {}), "two votes on one pair"
        by_rater[row["external_id"]][row["pair_id"]] = dict(row)
    anon = [r for r in by_rater if r.startswith("anon:")]
    assert len(rows) == 15 and len(by_rater) == 3 and len(anon) == 2
    js_anon = next(r for r in anon if set(by_rater[r]) == set(anonymous_answers))
    no_js = next(r for r in anon if r != js_anon)
    for rater, answers, js in ((f"prolific:{PID}", expected[f"prolific:{PID}"], True),
                               (js_anon, anonymous_answers, True), (no_js, plain_answers, False)):
        votes = by_rater[rater]
        assert set(votes) == set(answers) and sorted(v["position"] for v in votes.values()) == [1, 2, 3, 4, 5]
        for pair, (side, how) in answers.items():
            v = votes[pair]
            assert (v["side"], v["input"]) == (side, how), (rater, v)
            assert v["a_side"] in ("left", "right") and v["completed_at"] is not None
            if side == "same":
                assert v["choice"] == "same"
            elif v["is_attention_check"] and v["check_method"]:
                assert v["choice"] == v["check_method"]
            else:
                assert v["choice"] == ("robust" if side == v["a_side"] else "vanilla")
            if js:
                assert v["images_loaded"] == 1 and v["client_ms"] is not None and v["load_ms"] is not None
            else:
                assert v["images_loaded"] is None and v["client_ms"] is None
    # Each rater met the one attention check once; each real pair was shown to all three.
    with httpx.Client(base_url=up.url, headers={"Authorization": f"Bearer {up.key}"}) as http:
        status = http.get(f"/v1/surveys/{sid}").json()
    assert status["status"] == "closed" and status["raters"] == 3 and status["raters_completed"] == 3
    assert status["answers"] == 12
    for p in status["pairs"]:
        assert p["answers"] == 3 and (p["attention_check"] or abs(2 * p["a_left"] - 3) == 1)
