"""A three-arm study in headless Chromium against `rguide up`: creation, raters, researcher page, exports.

`rguide up` runs as a user starts it (SQLite, the filesystem broker, a real Celery worker). A researcher creates
a K = 3 study (robust 1.0, vanilla 0.5, robust 3.0; all pairs) over the API; the worker generates every arm's
image of each item from the same noise; raters answer the same two-image page as in a two-arm study; the
researcher page shows answers per arm pair; the exports carry the arm of each side, and the report ranks the arms.
"""
from __future__ import annotations

import csv
import io
from collections import Counter

import httpx
import pytest
from survey_browser_support import ARTIFACTS, RaterBrowser, Recorder, browser, rguide_up  # noqa: F401 (fixtures)
from survey_browser_support import consent as _consent
from survey_browser_support import open_study as _open

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(500)]

ARMS = [{"method": "robust", "scale": 1.0}, {"method": "vanilla", "scale": 0.5},
        {"method": "robust", "scale": 3.0, "name": "robust-strong"}]


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    with rguide_up(tmp_path_factory.mktemp("survey-arms-up")) as service:
        yield service


def test_a_three_arm_study_from_creation_to_exports_in_chromium(up, browser):
    study = _open(up, title="Three arms", num_pairs=2, seed=7, arms=ARMS, raters_per_pair=2, min_answer_ms=0,
                  attention_checks=True, attention_checks_per_rater=1, completion_code="ARMS-OK")
    sid, link = study["id"], study["links"]["rater_url"]
    assert [a["name"] for a in study["arms"]] == ["robust", "vanilla", "robust-strong"]
    assert study["num_pairs"] == 6 and study["pairs_per_rater"] == 6  # 2 items x 3 arm pairs
    headers = {"Authorization": f"Bearer {up.key}"}
    with httpx.Client(base_url=up.url, headers=headers, timeout=60) as http:
        manifest = http.get(f"/v1/surveys/{sid}/manifest").json()
    assert [list(item["images"]) for item in manifest["items"]] == [["robust", "vanilla", "robust-strong"]] * 2

    ARTIFACTS.mkdir(exist_ok=True)
    recorders, answers = [], {}
    for n, (viewport, sides) in enumerate([({"width": 1200, "height": 860}, ["left", "right", "same"]),
                                           ({"width": 390, "height": 844}, ["right", "same", "left"])]):
        context = browser.new_context(viewport=viewport)
        recorders.append(Recorder(context))
        page = context.new_page()
        page.goto(link)
        _consent(page)
        rater = RaterBrowser(page, answers.setdefault(n, {}))
        rater.ready()
        # The same two-image page as a two-arm study: no arm name anywhere a rater could read.
        assert page.locator("img").count() == 2
        body = page.content()
        assert all(name not in body for name in ("robust", "vanilla", "robust-strong"))
        if n == 0:
            page.screenshot(path=str(ARTIFACTS / "survey-arms-pair.png"), full_page=True)
        i = 0
        while not rater.done:
            rater.answer("click", sides[i % 3])
            i += 1
        assert page.inner_text("#completion-code").strip() == "ARMS-OK"
        assert i == 7  # six real pairs and one check
        context.close()

    office = browser.new_context(viewport={"width": 1200, "height": 900})
    recorders.append(Recorder(office))
    page = office.new_page()
    page.goto(f"{up.url}/researcher/surveys/{sid}?preferences=1")
    page.fill("#api_key", up.key)
    with page.expect_navigation():
        page.click("button[type=submit]")
    page.goto(f"{up.url}/researcher/surveys/{sid}?preferences=1")
    table = page.inner_text("#arm-pairs")
    for pair in ("robust vs vanilla", "robust vs robust-strong", "vanilla vs robust-strong"):
        assert pair in table
    page.screenshot(path=str(ARTIFACTS / "survey-arms-researcher.png"), full_page=True)
    with page.expect_navigation():
        page.click("#close-study")
    with page.expect_navigation():
        page.click("#confirm")
    page.goto(f"{up.url}/v1/surveys/{sid}/report?n_boot=100")
    assert page.locator("#ranking-table").count() == 1 and page.locator("#forest-plot").count() == 1
    page.screenshot(path=str(ARTIFACTS / "survey-arms-report.png"), full_page=True)
    office.close()
    for rec in recorders:
        assert all(u.startswith((up.url + "/", "data:")) for u in rec.requests), rec.requests
        assert rec.problems == []

    with httpx.Client(base_url=up.url, headers=headers, timeout=120) as http:
        status = http.get(f"/v1/surveys/{sid}").json()
        rows = list(csv.DictReader(io.StringIO(http.get(f"/v1/surveys/{sid}/votes?format=csv").text)))
        tidy = http.get(f"/v1/surveys/{sid}/votes?format=tidy").text
        results = http.get(f"/v1/surveys/{sid}/results?n_boot=100").json()
    assert status["status"] == "closed"
    real = [r for r in rows if r["attention_check"] == "false"]
    assert len(real) == 12 and len(rows) == 14
    # Every (arm pair, seed) was answered by both raters: balance within one, here exactly two each.
    per_row = Counter((r["arm_a"], r["arm_b"], r["seed"]) for r in real)
    assert len(per_row) == 6 and set(per_row.values()) == {2}
    for r in real:
        assert {r["left_arm"], r["right_arm"]} == {r["arm_a"], r["arm_b"]}
        clicked = {"left": r["left_arm"], "right": r["right_arm"], "same": "same"}[r["side"]]
        assert r["choice"] == clicked
    # Each rater's clicks are in the export as they were made.
    for n, expected in answers.items():
        for pair_id, (side, _how) in expected.items():
            assert sum(1 for r in rows if r["pair_id"] == pair_id and r["side"] == side) >= 1
    assert tidy.splitlines()[0].endswith("arm_a,arm_b")
    assert results["schema"] == "rguide.stats.arms/1" and results["n_answers"] == 12
    assert results["ranking"]["model"] == "davidson"
    assert [p["arms"] for p in results["arm_pairs"]] == [["robust", "vanilla"], ["robust", "robust-strong"],
                                                         ["vanilla", "robust-strong"]]
