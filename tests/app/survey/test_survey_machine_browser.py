"""The machine-rater pilot in headless Chromium, against `rguide up` (SQLite, filesystem broker, a real worker).

A demo study asked with ``machine_pilot`` opens; the worker process runs the pilot on the study's own
images; a rater answers every pair; the researcher's page shows the "machine raters: a proxy" section
(status, numbers, limits, agreement with the rater), and the study report carries the same section
apart from the human statistics. Screenshots land in test-artifacts/.
"""
from __future__ import annotations

import time

import httpx
import pytest
from survey_browser_support import RaterBrowser, Recorder, browser, rguide_up, shot  # noqa: F401 (fixtures)
from survey_browser_support import consent as _consent
from survey_browser_support import open_study as _open

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(400)]


def test_the_researcher_page_shows_the_machine_pilot_apart_from_the_human_answers(tmp_path, browser):
    with rguide_up(tmp_path) as up:
        study = _open(up, preset="demo", title="Digits: robust or vanilla?", num_pairs=4, seed=5,
                      raters_per_pair=3, min_answer_ms=0, machine_pilot={"raters": 5, "seed": 0})
        sid = study["id"]
        headers = {"Authorization": f"Bearer {up.key}"}
        deadline = time.monotonic() + 240
        while (pilot := httpx.get(f"{up.url}/v1/surveys/{sid}/machine-votes", headers=headers).json())[
                "status"] in ("queued", "running"):
            assert time.monotonic() < deadline, (pilot, up.log.read_text(errors="replace")[-3000:])
            time.sleep(0.5)
        assert pilot["status"] == "succeeded" and pilot["votes"] == 4 * 5, pilot

        rater = browser.new_context(viewport={"width": 1200, "height": 860})
        recorders = [Recorder(rater)]
        page = rater.new_page()
        page.goto(study["links"]["rater_url"])
        _consent(page)
        r = RaterBrowser(page, {})
        for i in range(4):
            r.answer("click", ("left", "right", "same", "left")[i])
        assert r.done
        rater.close()

        office = browser.new_context(viewport={"width": 1200, "height": 900})
        recorders.append(Recorder(office))
        page = office.new_page()
        page.goto(f"{up.url}/researcher/surveys/{sid}")
        page.fill("#api_key", up.key)
        with page.expect_navigation():
            page.click("button[type=submit]")
        section = page.locator("#machine-raters")
        assert "Machine raters: a proxy" in section.inner_text()
        assert "succeeded" in page.inner_text("#machine-status") and "20 machine votes" in page.inner_text(
            "#machine-status")
        summary = page.inner_text("#machine-summary")
        # While the study collects, the human counts are hidden, and so is the agreement with them.
        assert "20 machine answers on 4 pairs" in summary and "Agreement with the human answers" not in summary
        assert "hidden with the preference counts" in page.inner_text("#machine-agreement-hidden")
        with page.expect_navigation():
            page.click("#preferences-hidden a")
        summary = page.inner_text("#machine-summary")
        assert "Agreement with the human answers" in summary and page.locator("#machine-agreement-hidden").count() == 0
        shot(page, "survey-researcher-machine")
        assert recorders[1].problems == []
        with page.expect_navigation() as nav:
            page.click("text=machine report (HTML)")
        assert nav.value.status == 200 and "Machine raters (a proxy)" in page.inner_text("h1")
        shot(page, "survey-machine-report")
        assert page.goto(f"{up.url}/v1/surveys/{sid}/report?n_boot=100").status == 200
        assert "Machine raters: a proxy" in page.inner_text("#machine-raters")
        shot(page, "survey-report-machine-section")
        office.close()
        # The reports link no favicon (they must stay self-contained), so Chromium asks the server for
        # /favicon.ico once; that 404 is logged to the console without its URL. Nothing else may fail.
        reports = recorders[1].problems
        assert len(reports) <= 1 and all("status of 404" in p for p in reports), reports
        assert recorders[0].problems == []
        assert all(u.startswith(up.url) or u.startswith("data:") for rec in recorders for u in rec.requests)
