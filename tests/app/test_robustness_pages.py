"""The researcher's robustness-report pages, in-process: jobs inserted as a worker leaves them (the demo report
in docs/reports as the stored result), read through the signed-in key's cookie."""
from __future__ import annotations

import contextlib
import json

from fastapi.testclient import TestClient

from conftest import REPO
from survey_support import new_key, sqlite_settings

DEMO = REPO / "docs" / "reports" / "robustness-demo-l2-eot"


@contextlib.contextmanager
def pages(tmp_path):
    """The app on SQLite, signed in with a researcher key (``client.key_id`` its row)."""
    from app.keys import ApiKey
    from app.main import create_app
    from worker import db

    settings = sqlite_settings(tmp_path)
    with TestClient(create_app(settings, run_reaper=False)) as client:
        client.settings = settings
        key = new_key(settings)
        with client.app.state.sessions() as s:
            client.key_id = next(k.id for k in s.query(ApiKey) if k.name == "researcher")
        assert client.post("/researcher/login", data={"api_key": key}, follow_redirects=False).status_code == 303
        yield client
    db.dispose_engines()


def insert(client, owner: str, status: str = "queued", **settings) -> str:
    """A report job as the worker leaves it: succeeded ones hold the demo's report, JSON and Markdown."""
    from worker import robustness_jobs
    from worker.db import utcnow

    report = json.loads((DEMO / "report.json").read_text())
    with client.app.state.sessions() as s:
        job, _ = robustness_jobs.create(s, preset="demo", settings={**report["config"], **settings},
                                        progress_total=1000, owner_key_id=owner)
        job.status = status
        if status == "running":
            job.progress_step, job.started_at = 370, utcnow()
        if status == "succeeded":
            job.result = {"report": report, "per_sample": json.loads((DEMO / "per_sample.json").read_text())}
            job.markdown = (DEMO / "report.md").read_text()
            job.progress_step, job.finished_at = 1000, utcnow()
        s.commit()
        return job.id


def test_signed_out_the_pages_send_to_the_login(tmp_path):
    from app.main import create_app
    from worker import db

    with TestClient(create_app(sqlite_settings(tmp_path), run_reaper=False)) as client:
        for path in ("/researcher/robustness", "/researcher/robustness/0123456789abcdef0123456789abcdef"):
            r = client.get(path, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == f"/researcher/login?next={path}"
    db.dispose_engines()


def test_the_list_shows_the_keys_own_reports_newest_first_and_no_others(tmp_path):
    with pages(tmp_path) as client:
        assert "No robustness reports yet." in client.get("/researcher/robustness").text
        older = insert(client, client.key_id, "succeeded")
        newer = insert(client, client.key_id, "running", n=17)
        theirs = insert(client, "someone-else", "succeeded")
        page = client.get("/researcher/robustness").text
        assert f"/researcher/robustness/{newer}" in page and f"/researcher/robustness/{older}" in page
        assert page.index(newer) < page.index(older)
        assert theirs not in page
        assert "fgsm, pgd, fgm-l2, pgd-l2" in page and "<td>17</td>" in page and "37%" in page
        r = client.get(f"/researcher/robustness/{theirs}")
        assert r.status_code == 404 and "There is no robustness report" in r.text
        assert "All robustness reports" in r.text
        assert client.get("/researcher/robustness/not-an-id").status_code == 404


def test_an_admin_key_sees_every_report(tmp_path):
    from app.keys import create_key
    from worker.db import session_scope

    with pages(tmp_path) as client:
        theirs = insert(client, "someone-else", "failed")
        with session_scope(client.settings.database_url) as s:
            admin = create_key(s, "admin", admin=True)[1]
        client.post("/researcher/login", data={"api_key": admin}, follow_redirects=False)
        assert theirs in client.get("/researcher/robustness").text
        page = client.get(f"/researcher/robustness/{theirs}")
        assert page.status_code == 200 and "There is no report (status failed)." in page.text


def test_a_succeeded_report_renders_its_tables_sanity_checks_and_downloads(tmp_path):
    with pages(tmp_path) as client:
        job_id = insert(client, client.key_id, "succeeded")
        r = client.get(f"/researcher/robustness/{job_id}")
        assert r.status_code == 200 and "Refresh" not in r.headers
        page = r.text
        assert '<h2 id="transfer-attacks-black-box-for-every-defence-but-the-surrogate">' in page
        assert "<th>pgd-l2</th>" in page and "<td>diffusion, EOT over 2 draws</td>" in page
        assert "37.5% [8.5, 75.5] (n=8), 10 steps; clean on these 8/8" in page
        assert "all 35 passed" in page and page.count('<strong class="verdict">PASS</strong>') == 35
        assert "defence: vanilla · share_nonzero: 1.0 · n: 8" in page
        assert "FAIL" not in page
        base = f"/v1/robustness-reports/{job_id}"
        for link in (f"{base}/report.md", f"{base}/per_sample.json", base):
            assert f'href="{link}"' in page
            assert client.get(link).status_code == 200, link          # by the session cookie alone
        assert client.get(f"{base}/report.md").text == (DEMO / "report.md").read_text()
        assert "<th>diffusion_whitebox_n</th><td><code>8</code></td>" in page


def test_a_failed_sanity_check_is_called_out(tmp_path):
    from worker.robustness_models import RobustnessJob

    with pages(tmp_path) as client:
        job_id = insert(client, client.key_id, "succeeded")
        with client.app.state.sessions() as s:
            job = s.get(RobustnessJob, job_id)
            report = dict(job.result["report"])
            report["sanity"] = [{**report["sanity"][0], "passed": False}, *report["sanity"][1:]]
            job.result = {**job.result, "report": report}
            job.markdown = job.markdown.replace("- PASS: gradients are non-zero", "- FAIL: gradients are non-zero", 1)
            s.commit()
        page = client.get(f"/researcher/robustness/{job_id}").text
        assert "1 of 35 FAILED" in page and 'class="sanity-summary fail"' in page
        assert '<li class="fail"><strong class="verdict">FAIL</strong> gradients are non-zero' in page


def test_a_running_report_shows_its_progress_and_refreshes(tmp_path):
    with pages(tmp_path) as client:
        job_id = insert(client, client.key_id, "running")
        r = client.get(f"/researcher/robustness/{job_id}")
        assert r.status_code == 200 and r.headers["Refresh"] == "5"
        assert "Running: 37% of the report" in r.text and '<progress max="1" value="0.37">' in r.text
        assert "report.md" not in r.text and f"/v1/robustness-reports/{job_id}/cancel" in r.text
        queued = insert(client, client.key_id)
        r = client.get(f"/researcher/robustness/{queued}")
        assert r.headers["Refresh"] == "5" and "Waiting for a worker." in r.text


def test_the_study_list_and_home_link_the_pages(tmp_path):
    with pages(tmp_path) as client:
        studies = client.get("/researcher/surveys").text
        home = client.get("/").text
        for path in ("/researcher/robustness", "/researcher/classifications", "/researcher/evaluations"):
            assert f'href="{path}"' in studies and f'href="{path}"' in home
