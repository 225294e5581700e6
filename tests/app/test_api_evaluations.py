"""/v1/evaluations in-process on SQLite: validation at the edge, and shards run by the worker's own code,
cancelled, resumed (finished shards kept) and merged into the numbers of one process."""
from __future__ import annotations

import json

import pytest

from survey_support import survey_api as api


@pytest.mark.parametrize("body, field", [
    ({"shard_size": 7, "feature_batch": 5}, "shard_size"),
    ({"methods": ["nope"]}, "methods"),
    ({"preset": "tiny"}, "preset"),            # the tiny preset names no evaluation features
    ({"preset": "no-such-preset"}, "preset"),
    ({"per_class": 0}, "per_class"),
    ({"steps": "25", "samplers": ["ddim:10"]}, "samplers"),
    ({"real_data": "/etc"}, "real_data"),      # no server paths from a request
])
def test_an_invalid_evaluation_is_a_422_naming_the_field_and_stores_nothing(tmp_path, body, field):
    from worker.evaluation_models import Evaluation

    with api(tmp_path) as client:
        r = client.post("/v1/evaluations", headers=client.hdr, json={"preset": "demo", **body})
        assert r.status_code == 422, r.text
        assert any(e["loc"][:2] == ["body", field] for e in r.json()["detail"]), r.json()
        with client.app.state.sessions() as s:
            assert s.query(Evaluation).count() == 0


def test_an_evaluation_needs_a_researcher_key(tmp_path):
    with api(tmp_path) as client:
        assert client.post("/v1/evaluations", json={"preset": "demo"}).status_code == 401


@pytest.mark.slow
def test_shards_cancel_resume_and_merge_to_the_one_process_numbers(tmp_path):
    from model_core.evaluation.quality import EvalSettings, run_evaluation
    from worker import evaluation_jobs
    from worker.evaluation_runner import run_shard_job

    req = {"preset": "demo", "methods": ["none"], "per_class": 1, "steps": "3", "seed": 3, "feature_batch": 5,
           "shard_size": 5}
    with api(tmp_path) as client:
        r = client.post("/v1/evaluations", headers=client.hdr, json=req)
        assert r.status_code == 202, r.text
        ev = r.json()
        url = ev["links"]["self"]
        assert ev["status"] == "queued" and ev["num_shards"] == 2 and ev["rows"][0]["result"] is None
        with client.app.state.sessions() as s:
            first, second = [sd.id for sd in evaluation_jobs.shards_of(s, ev["id"])]
        assert run_shard_job(client.settings, first) == "succeeded"
        body = client.get(url, headers=client.hdr).json()
        assert body["status"] == "running" and body["shards"]["succeeded"] == 1 and 0 < body["progress"] < 1

        body = client.post(f"{url}/cancel", headers=client.hdr).json()
        assert body["status"] == "canceled" and body["shards"]["canceled"] == 1
        assert run_shard_job(client.settings, second) == "skipped"  # a canceled shard's message does nothing

        body = client.post(f"{url}/resume", headers=client.hdr).json()
        assert body["status"] == "running" and body["shards"] == {**body["shards"], "queued": 1, "succeeded": 1}
        assert run_shard_job(client.settings, first) == "merged"    # finished: never sampled again
        assert run_shard_job(client.settings, second) == "succeeded"
        body = client.get(url, headers=client.hdr).json()
        assert body["status"] == "succeeded" and body["rows"][0]["result"]["n_fake"] == 10
        shards = client.get(f"{url}/shards", headers=client.hdr).json()["items"]
        assert [s["computed"] for s in shards] == [1, 1]
        assert client.post(f"{url}/cancel", headers=client.hdr).status_code == 409
        md = client.get(f"{url}/results.md", headers=client.hdr)
        assert md.status_code == 200 and md.text.startswith("# Evaluation of preset `demo`")
        assert client.post("/researcher/login", data={"api_key": client.key}, follow_redirects=False).status_code == 303
        page = client.get(f"/researcher/evaluations/{ev['id']}")
        assert page.status_code == 200 and "succeeded" in page.text and "<td>none</td>" in page.text
        assert ev["id"][:12] in client.get("/researcher/evaluations").text

    one = run_evaluation(EvalSettings(preset="demo", methods=["none"], per_class=1, steps="3", seed=3,
                                      feature_batch=5), tmp_path / "one", progress=False)
    merged = body["report"]["rows"][0]
    assert abs(merged["fid"] - one["rows"][0]["fid"]) < 1e-6
    assert merged["precision"] == one["rows"][0]["precision"] and merged["recall"] == one["rows"][0]["recall"]


@pytest.mark.slow
def test_rguide_evaluate_on_workers_submits_follows_and_writes_the_table(tmp_path, monkeypatch, capsys):
    from rguide import remote_evaluate
    from rguide.cli import main
    from worker import evaluation_jobs
    from worker.evaluation_runner import run_shard_job

    with api(tmp_path) as client:
        def call(base, key, method, path, body=None):
            assert base == "http://service" and key == client.key
            if method == "GET" and path.startswith("/v1/evaluations/"):
                # A worker runs one waiting shard between two polls.
                with client.app.state.sessions() as s:
                    waiting = [sd.id for sd in evaluation_jobs.shards_of(s, path.split("/")[3])
                               if sd.status == "queued"]
                if waiting:
                    run_shard_job(client.settings, waiting[0])
            r = client.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code < 400, r.text
            return r.json()

        monkeypatch.setattr(remote_evaluate, "_call", call)
        monkeypatch.setattr(remote_evaluate.time, "sleep", lambda s: None)
        monkeypatch.setenv("RGUIDE_API_KEY", client.key)
        out = tmp_path / "remote"
        assert main(["evaluate", "--on-workers", "http://service", "--preset", "demo", "--guidance", "none",
                     "--per-class", "1", "--steps", "3", "--seed", "3", "--feature-batch", "5", "--shard-size", "5",
                     "--out", str(out), "--no-progress"]) == 0
        printed = capsys.readouterr().out
        assert "row 0: ddpm:3 none scale -: FID" in printed
        report = json.loads((out / "results.json").read_text())
        assert report["rows"][0]["n_fake"] == 10 and report["command"] == "POST /v1/evaluations"
        assert (out / "results.md").read_text().startswith("# Evaluation of preset `demo`")
        assert main(["evaluate", "--on-workers", "http://service", "--real", "x.npz", "--out", str(out)]) == 2
        assert "--real" in capsys.readouterr().err


@pytest.mark.slow
def test_seed_noise_rows_merge_from_shards_as_in_one_process(tmp_path):
    from model_core.evaluation.quality import EvalSettings, run_evaluation
    from worker import evaluation_jobs
    from worker.evaluation_runner import run_shard_job

    req = {"preset": "demo", "methods": ["none"], "per_class": 1, "steps": "2", "seed": 1, "seed_noise": True,
           "feature_batch": 5, "shard_size": 5}
    with api(tmp_path) as client:
        ev = client.post("/v1/evaluations", headers=client.hdr, json=req).json()
        assert [r["seed_set"] for r in ev["rows"]] == [0, 1] and ev["rows"][1]["first_seed"] == 11
        with client.app.state.sessions() as s:
            ids = [sd.id for sd in evaluation_jobs.shards_of(s, ev["id"])]
        for sid in reversed(ids):  # any order
            assert run_shard_job(client.settings, sid) == "succeeded"
        report = client.get(ev["links"]["self"], headers=client.hdr).json()["report"]
    one = run_evaluation(EvalSettings(preset="demo", methods=["none"], per_class=1, steps="2", seed=1,
                                      seed_noise=True, feature_batch=5), tmp_path / "one", progress=False)
    (merged,), (local,) = report["rows"], one["rows"]
    for key in ("fid", "precision", "recall", "label_accuracy"):
        assert abs(merged[key] - local[key]) < 1e-6
        assert abs(merged["second_seed_set"][key] - local["second_seed_set"][key]) < 1e-6
    assert report["seed_noise"]["max_difference"] == pytest.approx(one["seed_noise"]["max_difference"], abs=1e-6)
