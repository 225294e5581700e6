"""An evaluation fanned out over three real worker processes (PostgreSQL, Redis), one of them killed with
SIGKILL in the middle of a shard: the evaluation completes, no shard is sampled to the end twice, and the
merged metrics are those of `rguide evaluate` in one process on the same seeds."""
from __future__ import annotations

import time

import pytest

from conftest import WorkerProcess
from survey_support import new_key

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

REQUEST = {"preset": "demo", "methods": ["none", "robust"], "scales": [1.0], "per_class": 2, "steps": "20",
           "seed": 7, "feature_batch": 5, "shard_size": 5}


def _shards(env, evaluation_id):
    from worker import evaluation_jobs

    with env.session() as s:
        return [(sd.id, sd.status, sd.lease_owner, sd.progress_step, sd.progress_total, sd.attempts, sd.computed)
                for sd in evaluation_jobs.shards_of(s, evaluation_id)]


def test_an_evaluation_survives_a_worker_killed_mid_shard_and_equals_one_process(service_factory, tmp_path):
    from model_core.evaluation.quality import EvalSettings, run_evaluation
    from worker.celery_app import Enqueuer
    from worker.reaper import reap_once

    env = service_factory()
    workers = [WorkerProcess(env.settings, f"ev{i}", env.log_dir, preload="demo") for i in range(3)]
    env.workers.extend(workers)
    for w in workers:
        w.wait_ready(timeout=180)
    hdr = {"Authorization": f"Bearer {new_key(env.settings)}"}
    enqueuer = Enqueuer(env.settings)
    with env.client() as client:
        r = client.post("/v1/evaluations", headers=hdr, json=REQUEST)
        assert r.status_code == 202, r.text
        ev = r.json()
        assert ev["num_shards"] == 8 and ev["num_images"] == 40
        url = ev["links"]["self"]

        # Kill the worker of a shard that has started sampling and not finished.
        victim, killed_shard = None, None
        deadline = time.monotonic() + 240
        while victim is None and time.monotonic() < deadline:
            for sid, status, owner, step, total, _a, _c in _shards(env, ev["id"]):
                if status == "running" and owner and 0 < step < total:
                    pid = int(owner.split(":")[-2])
                    victim = next((w for w in workers if w.pid == pid), None)
                    killed_shard = sid
                    break
            time.sleep(0.05)
        assert victim is not None, "no shard was seen mid-way"
        victim.kill()
        row = next(x for x in _shards(env, ev["id"]) if x[0] == killed_shard)
        assert row[1] == "running" and row[6] == 0, row  # killed before it finished

        seen_rows = set()
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            reap_once(env.settings, enqueuer)  # what the API process does every few seconds
            body = client.get(url, headers=hdr).json()
            seen_rows.add(body["rows_done"])
            if body["status"] in ("succeeded", "failed", "canceled"):
                break
            time.sleep(0.5)
        assert body["status"] == "succeeded", (body, [w.log_tail() for w in workers])
        shards = _shards(env, ev["id"])
        assert all(s[6] == 1 for s in shards), shards            # no shard sampled to the end twice
        assert next(s for s in shards if s[0] == killed_shard)[5] == 2  # re-run once, by another worker
        assert client.post(f"{url}/resume", headers=hdr).status_code == 409
        md = client.get(f"{url}/results.md", headers=hdr)
        assert md.status_code == 200 and "| robust | 1 |" in md.text

    one = run_evaluation(EvalSettings(preset="demo", methods=["none", "robust"], scales=[1.0], per_class=2,
                                      steps="20", seed=7, feature_batch=5), tmp_path / "one", progress=False)
    merged = body["report"]["rows"]
    assert [(r["method"], r["scale"]) for r in merged] == [(r["method"], r["scale"]) for r in one["rows"]]
    for a, b in zip(merged, one["rows"]):
        # A shard's batch mixes rows and has another size than the one-process run's, and float32 kernels may
        # round differently by batch size (docs/sampling.md: x_0 equal to about 1e-6, not bit for bit). FID of
        # 10 images is ill-conditioned enough to turn that into ~5e-6 relative on some CPUs (seen: 900.7124
        # against 900.7172 for the unguided row, the guided row identical); the k-NN metrics must still agree.
        assert a["fid"] == pytest.approx(b["fid"], rel=1e-4), (a["fid"], b["fid"])
        for m in ("precision", "recall", "label_accuracy"):
            assert a[m] == pytest.approx(b[m], abs=1e-12), m
