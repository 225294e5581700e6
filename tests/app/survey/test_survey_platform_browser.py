"""Issue 15 in headless Chromium against `rguide up`: a study run on Prolific or MTurk as raters and a
researcher meet it.

* a rater who tries to unblind the pairs through the public API, and fails;
* every exit page with its code and its link back to Prolific, on a desktop and a phone;
* a participant who switches device part-way and stays one rater;
* the whole study inside an MTurk-style iframe on another site, submitted to its externalSubmit;
* a keyboard-only straight-liner, flagged and excluded, and the per-rater CSV a researcher downloads;
* a pair released after the time-out and taken by the next rater;
* the report saved as a file and opened from disk with its images;
* the pair page's buttons in view at 1366x657 and on a phone on its side; borders and focus at 3:1.

Screenshots of every page changed land in test-artifacts/.
"""
from __future__ import annotations

import csv
import io
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote

import httpx
import pytest
from sqlalchemy import create_engine, text
from survey_browser_support import (  # noqa: F401 (browser is a fixture)
    DESKTOP,
    LAPTOP,
    PHONE,
    PHONE_LANDSCAPE,
    RaterBrowser,
    Recorder,
    browser,
    consent,
    free_port,
    in_view,
    open_study,
    rguide_up,
    shot,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(600)]

PID = "65a1b2c3d4e5f60718293a4b"
PROLIFIC_URL = "https://app.prolific.com/submissions/complete?cc="


class FakeMTurk:
    """A stand-in for the MTurk worker site on another origin: a HIT page framing the survey, and the
    externalSubmit endpoint that records what the survey posts."""

    def __init__(self):
        self.port = free_port()
        self.origin = f"http://localhost:{self.port}"
        self.submissions: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, body: str):
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                src = parse_qs(self.path.split("?", 1)[1])["src"][0] if "?" in self.path else ""
                self._send(f'<!doctype html><title>HIT</title><h1>A HIT</h1><iframe id="hit" src="{src}" '
                           'width="1000" height="820" style="border:1px solid #888"></iframe>')

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                outer.submissions.append({k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()})
                self._send("<!doctype html><title>Submitted</title><p id='submitted'>HIT submitted</p>")

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def mturk():
    with FakeMTurk() as fake:
        yield fake


@pytest.fixture(scope="module")
def up(tmp_path_factory, mturk):
    with rguide_up(tmp_path_factory.mktemp("survey-platforms"), RGUIDE_MTURK_HOSTS=mturk.origin) as service:
        yield service


def _api(up) -> httpx.Client:
    return httpx.Client(base_url=up.url, headers={"Authorization": f"Bearer {up.key}"}, timeout=60)


def _db_rows(up, sql: str, **params) -> list[dict]:
    engine = create_engine(f"sqlite:///{up.data_dir / 'rguide.db'}")
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(text(sql), params).mappings()]
    engine.dispose()
    return rows


def _sign_in(page, up, target: str) -> None:
    page.goto(f"{up.url}{target}")
    page.fill("#api_key", up.key)
    with page.expect_navigation():
        page.click("button[type=submit]")


# -- blinding --------------------------------------------------------------------------------------------------

def test_a_rater_in_chromium_cannot_unblind_the_pairs(up, browser):
    study = open_study(up, num_pairs=2, seed=5)
    with _api(up) as http:
        manifest = http.get(f"/v1/surveys/{study['id']}/manifest").json()
    originals = [im["image_id"] for p in manifest["pairs"] for im in p["images"].values()]
    jobs = set(manifest["generation_jobs"])
    context = browser.new_context(**DESKTOP)
    page = context.new_page()
    page.goto(study["links"]["rater_url"])
    consent(page)
    RaterBrowser(page, {}).ready()
    html = page.content()
    assert not re.search(r"robust|vanilla", html, re.I)
    shown = [page.get_attribute(f"#img-{side}", "src") for side in ("left", "right")]
    # The rater's browser tries the public API: the study's jobs are not listed, nor readable, nor its originals.
    listing = context.request.get(f"{up.url}/v1/generations?limit=100").json()
    assert not {j["id"] for j in listing["items"]} & jobs
    for job in jobs:
        assert context.request.get(f"{up.url}/v1/generations/{job}").status == 404
    for image in originals:
        assert context.request.get(f"{up.url}/v1/images/{image}.png").status == 404
    assert context.request.get(f"{up.url}/v1/surveys/{study['id']}/manifest").status == 401
    # What is shown carries no metadata chunk at all.
    for src in shown:
        png = context.request.get(src if src.startswith("http") else f"{up.url}{src}").body()
        assert png.startswith(b"\x89PNG") and b"tEXt" not in png and b"iTXt" not in png and b"zTXt" not in png
    context.close()


# -- exits -----------------------------------------------------------------------------------------------------

def _exit(page) -> tuple[str, str | None, str | None]:
    outcome = page.get_attribute("#exit", "data-outcome")
    code = page.locator("#completion-code, #exit-code")
    link = page.locator("#return-link")
    return (outcome, code.inner_text().strip() if code.count() else None,
            link.get_attribute("href") if link.count() else None)


def test_every_exit_shows_its_code_and_the_way_back_to_prolific(up, browser):
    study = open_study(up, num_pairs=2, seed=6, raters_per_pair=1, platform="prolific", attention_checks=True,
                       attention_checks_per_rater=1, exits={"no_consent": {"code": "NOCONSENT"}},
                       completion_code="PROLIFIC-DONE")
    sid, link = study["id"], study["links"]["rater_url"]
    codes = {k: v["code"] for k, v in study["exits"].items()}
    prolific = f"{link}?PROLIFIC_PID={{pid}}&STUDY_ID=st&SESSION_ID=se"

    # "I do not consent": on a phone.
    phone = browser.new_context(**PHONE)
    page = phone.new_page()
    page.goto(prolific.format(pid="declines0000000000000001"))
    shot(page, "survey-landing-phone")
    with page.expect_navigation():
        page.tap("#decline")
    assert _exit(page) == ("no_consent", "NOCONSENT", PROLIFIC_URL + "NOCONSENT")
    shot(page, "survey-exit-no-consent-phone")
    phone.close()

    # A participant who fails the instructed check: screened out at once, with its code.
    desktop = browser.new_context(**DESKTOP)
    page = desktop.new_page()
    page.goto(prolific.format(pid="careless000000000000000a"))
    consent(page)
    rater = RaterBrowser(page, {}, follow_checks=False)
    while rater.outcome is None:
        if page.locator("#check-instruction").count():
            assert "Attention check" in page.inner_text("#check-instruction")
            shot(page, "survey-pair-check")
        rater.answer("click", "same")
    assert _exit(page) == ("failed_checks", codes["failed_checks"], PROLIFIC_URL + codes["failed_checks"])
    shot(page, "survey-exit-failed-checks")
    # Their slots went back: a careful participant takes both pairs and completes.
    page.goto(prolific.format(pid="careful0000000000000000b"))
    consent(page)
    rater = RaterBrowser(page, {})
    while rater.outcome is None:
        rater.answer("click", "left")
    assert _exit(page) == ("completed", "PROLIFIC-DONE", PROLIFIC_URL + "PROLIFIC-DONE")
    shot(page, "survey-exit-completed")
    # The study is full now.
    page.goto(prolific.format(pid="toolate0000000000000000c"))
    assert _exit(page) == ("full", codes["full"], PROLIFIC_URL + codes["full"])
    shot(page, "survey-exit-full")
    # More raters are let in; one answers a pair, then the study closes under them.
    with _api(up) as http:
        assert http.patch(f"/v1/surveys/{sid}", json={"raters_per_pair": 2}).status_code == 200
    page.goto(prolific.format(pid="midway00000000000000000d"))
    consent(page)
    RaterBrowser(page, {}).answer("click", "right")
    with _api(up) as http:
        assert http.post(f"/v1/surveys/{sid}/close").json()["status"] == "closed"
    page.reload()
    assert _exit(page) == ("closed_midway", codes["closed_midway"], PROLIFIC_URL + codes["closed_midway"])
    shot(page, "survey-exit-closed-midway")
    page.goto(prolific.format(pid="afterclose00000000000000e"))
    assert _exit(page) == ("closed", codes["closed"], PROLIFIC_URL + codes["closed"])
    desktop.close()


def test_a_participant_who_switches_device_stays_one_rater(up, browser):
    study = open_study(up, num_pairs=4, seed=7)
    sid = study["id"]
    phone = browser.new_context(**PHONE)
    page = phone.new_page()
    page.goto(f"{study['links']['rater_url']}?PROLIFIC_PID={PID}&STUDY_ID=st&SESSION_ID=se")
    consent(page, tap=True)
    r1 = RaterBrowser(page, {})
    r1.answer("click", "left", tap=True)
    r1.answer("click", "right", tap=True)
    here, url = r1.ready(), page.url
    assert f"PROLIFIC_PID={PID}" in url
    phone.close()
    # The same participant on a laptop, through the address they were at (no cookie there).
    laptop = browser.new_context(**LAPTOP)
    page = laptop.new_page()
    page.goto(url)
    r2 = RaterBrowser(page, {})
    assert r2.ready() == here
    while r2.outcome is None:
        r2.answer("key", "same", "ArrowDown")
    assert r2.outcome == "completed"
    laptop.close()
    raters = _db_rows(up, "SELECT external_id, completed_at FROM survey_raters WHERE study_id = :sid", sid=sid)
    assert len(raters) == 1 and raters[0]["external_id"] == f"prolific:{PID}" and raters[0]["completed_at"]
    votes = _db_rows(up, "SELECT COUNT(*) AS n FROM survey_votes WHERE study_id = :sid", sid=sid)
    assert votes[0]["n"] == 4


# -- MTurk -------------------------------------------------------------------------------------------------------

def test_the_study_runs_inside_an_mturk_iframe_and_submits_the_hit(up, browser, mturk):
    study = open_study(up, num_pairs=3, seed=8, platform="mturk")
    ids = {"assignmentId": "3XYZASSIGN000001", "hitId": "3HITID000000001", "workerId": "A2WORKER00001",
           "turkSubmitTo": mturk.origin}
    src = study["links"]["rater_url"] + "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in ids.items())
    context = browser.new_context(**DESKTOP)
    page = context.new_page()
    # Previewing the HIT: the instructions, no way to start yet.
    page.goto(f"{mturk.origin}/hit?src=" + quote(src.replace("3XYZASSIGN000001", "ASSIGNMENT_ID_NOT_AVAILABLE"),
                                                   safe=""))
    frame = page.frame_locator("#hit")
    assert frame.locator("#preview-note").count() == 1 and frame.locator("#start").count() == 0
    # Accepted.
    page.goto(f"{mturk.origin}/hit?src=" + quote(src, safe=""))
    inner = page.frames[1]
    inner.wait_for_selector("#start")
    inner.check("input[name=consent]")
    with inner.expect_navigation():
        inner.click("#start")
    rater = RaterBrowser(inner, {})
    rater.ready()
    shot(page, "survey-mturk-iframe")
    while rater.outcome is None:
        rater.answer("click", "left")
    assert rater.outcome == "completed"
    with inner.expect_navigation():
        inner.click("#mturk-submit button")
    assert mturk.submissions == [{"assignmentId": "3XYZASSIGN000001", "outcome": "completed",
                                  "code": study["completion_code"]}]
    context.close()
    raters = _db_rows(up, "SELECT external_id, source, platform_session_id, platform_study_id, submit_to "
                          "FROM survey_raters WHERE study_id = :sid", sid=study["id"])
    assert raters == [{"external_id": "mturk:A2WORKER00001", "source": "mturk",
                       "platform_session_id": "3XYZASSIGN000001", "platform_study_id": "3HITID000000001",
                       "submit_to": mturk.origin}]


# -- rater quality -----------------------------------------------------------------------------------------------

def test_a_keyboard_straight_liner_is_flagged_and_the_researcher_exports_the_raters(up, browser, tmp_path):
    study = open_study(up, num_pairs=5, seed=9, attention_checks=True, attention_checks_per_rater=1,
                       attention_check_kind="identical", flag_min_answers=4, exclude_flags=["mostly_same"],
                       min_answer_ms=0)
    sid = study["id"]
    keyboard = browser.new_context(**DESKTOP)
    page = keyboard.new_page()
    page.goto(study["links"]["rater_url"])
    page.keyboard.press("Tab")
    page.keyboard.press(" ")  # the consent box, by keyboard
    page.keyboard.press("Tab")  # then Start
    with page.expect_navigation():
        page.keyboard.press("Enter")
    rater = RaterBrowser(page, {})
    while rater.outcome is None:
        rater.answer("key", "same", "ArrowDown")
    assert rater.outcome == "completed"
    keyboard.close()
    office = browser.new_context(**DESKTOP)
    page = office.new_page()
    _sign_in(page, up, f"/researcher/surveys/{sid}/raters")
    row = page.locator("table#raters tbody tr").first
    assert "mostly_same" in row.inner_text() and "excluded" in row.inner_text()
    shot(page, "survey-researcher-raters")
    with page.expect_download() as download:
        page.click("#raters-csv")
    path = tmp_path / "raters.csv"
    download.value.save_as(path)
    (exported,) = list(csv.DictReader(io.StringIO(path.read_text())))
    assert (exported["status"], exported["exclusion_reason"], exported["same_share"], exported["flags"]) == (
        "excluded", "flagged: mostly_same", "1.0", "mostly_same")
    assert exported["exit_code"] == study["completion_code"] and float(exported["duration_s"]) > 0
    page.goto(f"{up.url}/researcher/surveys/{sid}")
    assert "1\nraters excluded" in page.inner_text("main")
    shot(page, "survey-researcher-study")
    office.close()
    phone = browser.new_context(**PHONE)
    page = phone.new_page()
    _sign_in(page, up, f"/researcher/surveys/{sid}")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "survey-researcher-study-phone")
    page.goto(f"{up.url}/researcher/surveys/{sid}/raters")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "survey-researcher-raters-phone")
    phone.close()


def test_an_abandoned_pair_is_released_after_the_time_out(up, browser):
    study = open_study(up, num_pairs=1, seed=10, raters_per_pair=1, assignment_timeout_seconds=3)
    link = study["links"]["rater_url"]
    quitter = browser.new_context(**DESKTOP)
    page = quitter.new_page()
    page.goto(link)
    consent(page)
    RaterBrowser(page, {}).ready()
    page.close()  # walks away with the only slot
    second = browser.new_context(**PHONE)
    page = second.new_page()
    page.goto(link)
    assert _exit(page)[0] == "full"
    time.sleep(3.5)
    page.goto(link)
    consent(page, tap=True)
    rater = RaterBrowser(page, {})
    rater.answer("click", "left", tap=True)
    assert rater.outcome == "completed"
    second.close()
    page = quitter.new_page()  # comes back: the pair went to someone else
    page.goto(link)
    assert _exit(page)[0] == "no_pairs"
    quitter.close()


# -- the report ------------------------------------------------------------------------------------------------

def test_the_report_saved_as_a_file_opens_whole_on_a_desktop_and_a_phone(up, browser, tmp_path):
    study = open_study(up, num_pairs=4, seed=11, raters_per_pair=4)
    sid = study["id"]
    for k in range(3):
        context = browser.new_context(**DESKTOP)
        page = context.new_page()
        page.goto(f"{study['links']['rater_url']}?PROLIFIC_PID=reporter{k:016d}")
        consent(page)
        rater = RaterBrowser(page, {})
        while rater.outcome is None:
            rater.answer("click", ["left", "right", "left", "same"][(k + len(rater.expected)) % 4])
        context.close()
    with _api(up) as http:
        http.post(f"/v1/surveys/{sid}/close")
        html = http.get(f"/v1/surveys/{sid}/report?n_boot=200").text
    saved = tmp_path / "report.html"
    saved.write_text(html)
    for name, options in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(**options)
        rec = Recorder(context)
        page = context.new_page()
        page.goto(saved.as_uri())
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
        assert images and all(done and width > 0 for done, width in images)
        assert all(u.startswith(("file://", "data:")) for u in rec.requests), rec.requests
        assert rec.problems == []
        assert "Provisional" not in page.inner_text("body") and sid in page.inner_text("#study")
        assert re.search(r"\[\d+\.\d%, \d+\.\d%\]", page.inner_text("#table2"))
        # Nothing wider than the screen (a phone would widen its layout to fit): wide tables scroll in their box.
        assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
        shot(page, f"survey-report-{name}")
        context.close()


# -- the small things ---------------------------------------------------------------------------------------------

CONTRAST = """(sel) => {
  const lum = (c) => { const v = c.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number).map(x => x / 255)
      .map(x => x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4));
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const el = document.querySelector(sel); const s = getComputedStyle(el);
  const page = getComputedStyle(document.body).backgroundColor;
  return {border: ratio(s.borderTopColor, s.backgroundColor), borderPage: ratio(s.borderTopColor, page),
          outline: ratio(s.outlineColor, page)};
}"""


def test_the_pair_page_fits_short_screens_and_its_controls_have_contrast(up, browser):
    study = open_study(up, num_pairs=2, seed=12)
    for name, options in (("laptop", LAPTOP), ("phone-landscape", PHONE_LANDSCAPE), ("phone", PHONE)):
        context = browser.new_context(**options)
        page = context.new_page()
        page.goto(study["links"]["rater_url"])
        consent(page)
        RaterBrowser(page, {}).ready()
        for button in ("#btn-left", "#btn-same", "#btn-right"):
            assert in_view(page, button), (name, button)
        side = page.locator("#img-left").bounding_box()["width"]
        assert side >= (150 if name != "laptop" else 300), (name, side)
        assert page.inner_text("#desc-label").strip().lower() == "description"
        shot(page, f"survey-pair-{name}")
        if name == "phone":
            page.tap("#img-left")  # tap to zoom, tap again to close; no answer is sent
            big = page.locator(".zoom img").bounding_box()
            assert big["width"] >= 350
            shot(page, "survey-pair-phone-zoom")
            page.tap(".zoom")
            assert page.locator(".zoom").count() == 0 and page.locator("input[name=pair]").count() == 1
        if name == "laptop":
            page.focus("#btn-same")
            page.keyboard.press("Tab")
            page.keyboard.press("Shift+Tab")
            ratios = page.evaluate(CONTRAST, "#btn-same")
            assert ratios["border"] >= 3 and ratios["borderPage"] >= 3 and ratios["outline"] >= 3, ratios
        context.close()
    home = browser.new_context(**PHONE)
    page = home.new_page()
    page.goto(f"{up.url}/")
    assert "Robust classifier guidance" in page.inner_text("h1")
    shot(page, "home-phone")
    home.close()
