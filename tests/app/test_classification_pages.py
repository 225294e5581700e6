"""The researcher's classification pages, in-process: jobs inserted as a worker leaves them, read through the
signed-in key's cookie."""
from __future__ import annotations

import contextlib

from fastapi.testclient import TestClient

from survey_support import new_key, sqlite_settings

PROBS = [0.01, 0.02, 0.0, 0.05, 0.0, 0.03, 0.0, 0.84, 0.05, 0.0]
RESULT = {"prediction": 7, "class_name": "7", "probabilities": PROBS, "method": "diffusion",
          "network_evaluations": 60, "class_names": [str(i) for i in range(10)], "seconds": 1.54,
          "settings": {"schedule": "5:2,10", "seed": 3, "timestep_policy": "stratified"}}


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


def insert(client, owner: str, status: str = "queued", method: str = "diffusion") -> str:
    from worker import classification_jobs
    from worker.db import utcnow

    settings = {"method": method, **({"schedule": "5:2,10", "seed": 3} if method == "diffusion" else {})}
    with client.app.state.sessions() as s:
        job = classification_jobs.create(s, method=method, preset="demo", settings=settings, image_sha256="ab" * 32,
                                         image_path="ab/" + "ab" * 32 + ".png", owner_key_id=owner)
        job.status, job.progress_total = status, 60
        if status == "running":
            job.progress_step, job.started_at = 24, utcnow()
        if status == "succeeded":
            job.result = {**RESULT, "method": method}
            job.progress_step, job.finished_at = 60, utcnow()
        s.commit()
        return job.id


def test_signed_out_the_pages_send_to_the_login(tmp_path):
    from app.main import create_app
    from worker import db

    with TestClient(create_app(sqlite_settings(tmp_path), run_reaper=False)) as client:
        for path in ("/researcher/classifications", "/researcher/classifications/0123456789abcdef0123456789abcdef"):
            r = client.get(path, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == f"/researcher/login?next={path}"
    db.dispose_engines()


def test_the_list_shows_the_keys_own_classifications_and_no_others(tmp_path):
    with pages(tmp_path) as client:
        assert "No classifications yet." in client.get("/researcher/classifications").text
        older = insert(client, client.key_id, "succeeded")
        newer = insert(client, client.key_id, "running", method="robust")
        theirs = insert(client, "someone-else", "succeeded")
        page = client.get("/researcher/classifications").text
        assert page.index(newer) < page.index(older) and theirs not in page
        assert "<strong>7</strong> (0.840)" in page and "40%" in page
        r = client.get(f"/researcher/classifications/{theirs}")
        assert r.status_code == 404 and "There is no classification" in r.text and "All classifications" in r.text


def test_a_succeeded_classification_shows_its_prediction_probabilities_and_settings(tmp_path):
    with pages(tmp_path) as client:
        job_id = insert(client, client.key_id, "succeeded")
        r = client.get(f"/researcher/classifications/{job_id}")
        assert r.status_code == 200 and "Refresh" not in r.headers
        page = r.text
        assert "Predicted class <strong>7</strong>" in page and "60 network evaluations" in page
        assert page.count("<meter ") == 10 and '<tr class="predicted">' in page and "<td>0.8400</td>" in page
        for name, value in (("method", "diffusion"), ("preset", "demo"), ("schedule", "5:2,10"), ("seed", "3"),
                            ("timestep_policy", "stratified")):
            assert f"<th>{name}</th><td><code>{value}</code></td>" in page
        assert f'href="/v1/classifications/{job_id}"' in page
        assert f'src="/v1/classifications/{job_id}/image.png"' in page
        assert client.get(f"/v1/classifications/{job_id}").json()["class_name"] == "7"   # by the session cookie


def test_a_running_classification_shows_its_progress_and_refreshes(tmp_path):
    with pages(tmp_path) as client:
        job_id = insert(client, client.key_id, "running")
        r = client.get(f"/researcher/classifications/{job_id}")
        assert r.status_code == 200 and r.headers["Refresh"] == "5"
        assert "Running: 24 of 60 network evaluations." in r.text and "<meter" not in r.text
