"""Analysis jobs end to end: PostgreSQL, Redis and a real Celery worker process run them."""
from __future__ import annotations

import time

import pytest

from survey_support import new_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def wait_analysis(client, url, headers, timeout=180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url, headers=headers).json()
        if body["status"] in ("succeeded", "failed", "canceled"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"analysis still {body['status']} after {timeout} s")


def test_an_analysis_runs_on_a_celery_worker_with_progress(pg_service):
    hdr = {"Authorization": f"Bearer {new_key(pg_service.settings)}"}
    with pg_service.client() as client:
        r = client.post("/v1/analyses", headers=hdr, json={"kind": "trajectory", "preset": "tiny", "labels": [1],
                                                           "steps": "40", "frames": 4, "seed": 2})
        assert r.status_code == 202, r.text
        url = r.json()["links"]["self"]
        seen = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            body = client.get(url, headers=hdr).json()
            seen.add((body["status"], body["progress_step"]))
            if body["status"] == "succeeded":
                break
            time.sleep(0.05)
        done = wait_analysis(client, url, hdr)
        assert done["status"] == "succeeded", done
        assert done["summary"]["frame_steps"] == [0, 13, 26, 39]
        assert any(status == "running" and 0 < step < 40 for status, step in seen), seen  # progress was reported
        png = client.get(done["files"][0]["url"], headers=hdr)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
