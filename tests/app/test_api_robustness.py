"""/v1/robustness-reports in-process: checks at the edge (422 naming the field, nothing stored), idempotency,
cancel and the reaper, and a report run by the worker's own code (SQLite; tests/service runs it on PostgreSQL,
Redis and a Celery worker)."""
from __future__ import annotations

import pytest

from job_api_support import Recorder, count_rows
from survey_support import new_key
from survey_support import survey_api as api

# The tiny preset records no training data, so it has no held-out images: the runs use the demo's digits with
# settings small enough for seconds of CPU (two images, a one-timestep diffusion classifier).
SMALL = {"preset": "demo", "attacks": ["fgsm", "fgm-l2"], "n": 2, "schedule": "1", "sanity_n": 2,
         "sanity_eps": [0.05, 0.3], "sanity_eps_l2": [1.0, 3.0], "batch_size": 2}


BAD = [
    ({"preset": "nope"}, ["body", "preset"]),
    ({"preset": "tiny"}, ["body", "preset"]),                              # no held-out images recorded
    ({"preset": "demo", "attacks": ["pgd", "cw"]}, ["body", "attacks", 1]),
    ({"preset": "demo", "attacks": []}, ["body", "attacks"]),
    ({"preset": "demo", "settings": ["blackbox"]}, ["body", "settings", 0]),
    ({"preset": "demo", "defences": ["resnet"]}, ["body", "defences", 0]),
    ({"preset": "demo", "n": 501}, ["body", "n"]),                         # the demo holds out 500 digits
    ({"preset": "demo", "n": 0}, ["body", "n"]),
    ({"preset": "demo", "schedule": "3:11,6"}, ["body", "schedule"]),      # keeps more classes than exist
    ({"preset": "demo", "defences": ["vanilla"], "schedule": "5"}, ["body", "schedule"]),
    ({"preset": "demo", "diffusion_gradients": ["eot"]}, ["body", "diffusion_gradients"]),   # eot needs eot >= 1
    ({"preset": "demo", "eot": 65}, ["body", "eot"]),
    ({"preset": "demo", "sanity_eps": [0.05, 1.5]}, ["body", "sanity_eps", 1]),
    ({"preset": "demo", "n": 4, "sanity_n": 8}, ["body", "sanity_n"]),
    ({"preset": "demo", "speed": "fast"}, ["body", "speed"]),
]


@pytest.mark.parametrize("body,loc", BAD, ids=[str(loc) for _, loc in BAD])
def test_bad_input_is_a_422_naming_the_field_and_stores_nothing(tmp_path, body, loc):
    with api(tmp_path) as client:
        r = client.post("/v1/robustness-reports", json=body, headers=client.hdr)
        assert r.status_code == 422, r.text
        assert loc in [e["loc"] for e in r.json()["detail"]], r.json()
        assert count_rows(client, "robustness_report") == 0


def test_reports_need_a_key_and_are_private_to_it(tmp_path):
    with api(tmp_path) as client:
        assert client.post("/v1/robustness-reports", json=SMALL).status_code == 401
        assert count_rows(client, "robustness_report") == 0
        job = client.post("/v1/robustness-reports", json=SMALL, headers=client.hdr).json()
        other = {"Authorization": f"Bearer {new_key(client.settings, 'other')}"}
        assert client.get(job["links"]["self"], headers=other).status_code == 404
        assert client.get("/v1/robustness-reports", headers=other).json()["items"] == []


def test_idempotency_key_returns_the_first_job_and_refuses_another_body(tmp_path):
    with api(tmp_path) as client:
        hdr = {**client.hdr, "Idempotency-Key": "report-1"}
        a = client.post("/v1/robustness-reports", json=SMALL, headers=hdr)
        b = client.post("/v1/robustness-reports", json=SMALL, headers=hdr)
        assert a.status_code == b.status_code == 202 and a.json()["id"] == b.json()["id"]
        assert b.headers.get("Idempotent-Replayed") == "true" and count_rows(client, "robustness_report") == 1
        c = client.post("/v1/robustness-reports", json={**SMALL, "n": 3}, headers=hdr)
        assert c.status_code == 422 and ["header", "Idempotency-Key"] in [e["loc"] for e in c.json()["detail"]]
        assert count_rows(client, "robustness_report") == 1


def test_cancel_a_queued_report_and_the_reaper_resends_lost_ones(tmp_path):
    from worker.celery_app import ROBUSTNESS_TASK_NAME, TASK_NAME
    from worker.reaper import reap_once

    with api(tmp_path) as client:
        client.app.state.enqueuer.send = lambda ids, task=TASK_NAME: list(ids)  # "accepted", then lost
        a = client.post("/v1/robustness-reports", json=SMALL, headers=client.hdr).json()
        b = client.post("/v1/robustness-reports", json={**SMALL, "seed": 1}, headers=client.hdr).json()
        assert client.post(a["links"]["cancel"], headers=client.hdr).json()["status"] == "canceled"
        recorder = Recorder()
        result = reap_once(client.settings.replace(requeue_after_seconds=0), recorder)
        assert b["id"] in result.resent and a["id"] not in result.resent
        assert ((b["id"],), ROBUSTNESS_TASK_NAME) in recorder.sent


@pytest.mark.slow
def test_a_report_runs_on_the_worker_code_and_matches_the_core(tmp_path):
    import torch

    from model_core.pipeline import get_pipeline
    from model_core.robustness.report import ReportConfig, run_report
    from worker.robustness_runner import run_robustness_job

    torch.set_num_threads(1)
    with api(tmp_path) as client:
        r = client.post("/v1/robustness-reports", json=SMALL, headers=client.hdr)
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] == "queued" and r.headers["Location"] == job["links"]["self"]
        assert job["links"]["markdown"] is None and job["report"] is None
        assert run_robustness_job(client.settings, job["id"]) == "succeeded"
        assert run_robustness_job(client.settings, job["id"]) == "skipped"      # a repeated delivery does nothing
        done = client.get(job["links"]["self"], headers=client.hdr).json()
        assert done["status"] == "succeeded" and done["progress"] == 1.0 and done["progress_total"] > 0
        rep = done["report"]
        assert rep["job"]["id"] == job["id"] and rep["config"]["attacks"] == ["fgsm", "fgm-l2"]
        md = client.get(done["links"]["markdown"], headers=client.hdr)
        assert md.status_code == 200 and md.text.startswith("# Robustness report: preset `demo`")
        per_sample = client.get(done["links"]["per_sample"], headers=client.hdr).json()
        assert len(per_sample["indices"]) == 2
        # the same numbers as the core computes from the stored settings
        ref = run_report(ReportConfig(**{k: tuple(v) if isinstance(v, list) else v
                                         for k, v in done["settings"].items()}), pipeline=get_pipeline("demo", "cpu"))
        assert [(x["attack"], x["defence"], x.get("correct")) for x in rep["results"]] == \
            [(x["attack"], x["defence"], x.get("correct")) for x in ref["report"]["results"]]
        assert client.post(done["links"]["cancel"], headers=client.hdr).status_code == 409


@pytest.mark.slow
def test_rguide_robustness_on_workers_submits_follows_and_writes_the_files(tmp_path, monkeypatch, capsys):
    import json

    import torch

    from rguide import remote_evaluate
    from rguide.cli import main
    from worker.robustness_runner import run_robustness_job

    torch.set_num_threads(1)
    with api(tmp_path) as client:
        key = client.hdr["Authorization"].split()[1]
        posted = []

        def call(base, key_, method, path, body=None):
            assert base == "http://service" and key_ == key
            if method == "POST":
                posted.append(body)
            r = client.request(method, path, json=body, headers=client.hdr)
            assert r.status_code < 400, r.text
            if method == "GET" and r.json().get("status") == "queued":   # a worker takes it between two polls
                run_robustness_job(client.settings, r.json()["id"])
            return r.json()

        monkeypatch.setattr(remote_evaluate, "_call", call)
        monkeypatch.setattr("rguide.remote_robustness.time.sleep", lambda s: None)
        monkeypatch.setenv("RGUIDE_API_KEY", key)
        out = tmp_path / "remote"
        assert main(["robustness", "--on-workers", "http://service", "--preset", "demo", "--attacks", "fgsm,fgm-l2",
                     "--n", "2", "--schedule", "1", "--sanity-n", "2", "--sanity-eps", "0.05,0.3",
                     "--sanity-eps-l2", "1,3", "--batch-size", "2", "--out", str(out), "--no-progress"]) == 0
        assert posted[0]["attacks"] == ["fgsm", "fgm-l2"] and posted[0]["sanity_eps_l2"] == [1.0, 3.0]
        assert "Sanity checks" in capsys.readouterr().out
        report = json.loads((out / "report.json").read_text())
        assert report["config"]["n"] == 2 and report["job"]["worker"]
        assert (out / "report.md").read_text().startswith("# Robustness report: preset `demo`")
        assert len(json.loads((out / "per_sample.json").read_text())["indices"]) == 2
        assert main(["robustness", "--on-workers", "http://service", "--device", "cuda", "--out", str(out)]) == 2
        assert "--device" in capsys.readouterr().err
