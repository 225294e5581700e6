"""Robustness reports end to end: PostgreSQL, Redis and a real Celery worker process run them, with progress and
cancel (the demo's digits: the tiny preset has no held-out images)."""
from __future__ import annotations

import time

import pytest

from survey_support import new_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = {"preset": "demo", "attacks": ["fgsm", "fgm-l2"], "n": 2, "schedule": "1", "sanity_n": 2,
         "sanity_eps": [0.05, 0.3], "sanity_eps_l2": [1.0, 3.0], "batch_size": 2}
# Hours of CPU: it cannot finish before it is canceled.
LARGE = {"preset": "demo", "attacks": ["pgd", "pgd-l2", "autoattack"], "n": 500, "schedule": "50:5,500",
         "batch_size": 10}


def poll(client, url, headers, until, timeout=300.0) -> tuple[dict, set]:
    seen = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url, headers=headers).json()
        seen.add((body["status"], body["progress_step"], body["progress_total"]))
        if until(body):
            return body, seen
        time.sleep(0.05)
    raise AssertionError(f"report still {body['status']} after {timeout} s: {body}")


def test_a_report_runs_on_a_celery_worker_with_progress_and_a_running_one_can_be_canceled(pg_service):
    hdr = {"Authorization": f"Bearer {new_key(pg_service.settings)}"}
    with pg_service.client() as client:
        r = client.post("/v1/robustness-reports", headers=hdr, json=SMALL)
        assert r.status_code == 202, r.text
        done, seen = poll(client, r.json()["links"]["self"], hdr,
                          lambda b: b["status"] in ("succeeded", "failed", "canceled"))
        assert done["status"] == "succeeded", done
        assert any(s == "running" and 0 < step < total for s, step, total in seen), seen   # progress was reported
        assert done["report"]["clean"]["vanilla"]["n"] == 2
        md = client.get(done["links"]["markdown"], headers=hdr)
        assert md.status_code == 200 and "Sanity checks" in md.text

        r = client.post("/v1/robustness-reports", headers=hdr, json=LARGE)
        url = r.json()["links"]["self"]
        poll(client, url, hdr, lambda b: b["status"] == "running" and b["progress_step"] > 0)
        assert client.post(r.json()["links"]["cancel"], headers=hdr).status_code == 200
        end, _ = poll(client, url, hdr, lambda b: b["status"] != "running")
        assert end["status"] == "canceled" and end["report"] is None
