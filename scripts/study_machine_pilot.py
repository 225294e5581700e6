#!/usr/bin/env python
"""The machine-rater pilot on a survey study, measured in one process (docs/pilot.md, "On a study").

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python scripts/study_machine_pilot.py --out runs/study-pilot

Creates a ``demo-uncond`` study over the API (an in-process app on SQLite under OUT, no server to start)
with ``machine_pilot`` asked at creation: labels 0-9 twice (20 pairs, pair i seed i), the preset's
comparison (robust 4.0 vs vanilla 4.0, 100 DDPM steps), 5 simulated machine raters with the default judge
settings. The generation jobs and then the pilot job are run with the worker's own code, one after the
other, and OUT/result.json keeps the request, the timings, the pilot's status and its machine results.
No person answers: the numbers are the proxy's.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-class", type=int, default=2)
    args = ap.parse_args()
    import torch
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from app.keys import create_key
    from app.main import create_app
    from app.survey.report import machine_lines
    from worker.config import Settings
    from worker.db import session_factory, session_scope
    from worker.machine_vote_runner import run_machine_vote_job
    from worker.models import Job
    from worker.runner import run_job
    from worker.survey_models import MachineVoteJob

    torch.set_num_threads(1)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env({}, data_dir=out, media_dir=out / "media",
                                 database_url=f"sqlite:///{out / 'study.db'}", broker_url="filesystem://localhost/",
                                 redis_url=None, reaper_interval_seconds=0.0, rate_limit=0)
    body = {"preset": "demo-uncond", "labels": list(range(10)) * args.per_class, "seed": 0, "raters_per_pair": 5,
            "machine_pilot": {"raters": 5, "seed": 0}}
    with TestClient(create_app(settings, run_reaper=False)) as client:
        with session_scope(settings.database_url) as s:
            hdr = {"Authorization": f"Bearer {create_key(s, 'study-pilot')[1]}"}
        r = client.post("/v1/surveys", json=body, headers=hdr)
        r.raise_for_status()
        sid = r.json()["id"]
        Session = session_factory(settings.database_url)
        t0 = time.monotonic()
        with Session() as s:
            ids = list(s.scalars(select(Job.id).where(Job.study_id == sid).order_by(Job.created_at)))
        print("generation:", [run_job(settings, i) for i in ids])
        generation = time.monotonic() - t0
        assert client.get(f"/v1/surveys/{sid}", headers=hdr).json()["status"] == "open"  # opening queues the pilot
        with Session() as s:
            ids = list(s.scalars(select(MachineVoteJob.id).where(MachineVoteJob.study_id == sid)))
        t0 = time.monotonic()
        print("pilot:", [run_machine_vote_job(settings, i) for i in ids])
        pilot = time.monotonic() - t0
        status = client.get(f"/v1/surveys/{sid}/machine-votes", headers=hdr).json()
        results = client.get(f"/v1/surveys/{sid}/machine-results", headers=hdr).json()
    (out / "result.json").write_text(json.dumps({"request": body, "study_id": sid, "generation_seconds": generation,
                                                 "pilot_seconds": pilot, "pilot": status, "results": results},
                                                indent=1) + "\n")
    print(f"generation {generation:.0f} s, pilot job {pilot:.1f} s")
    for arm, numbers in status["result"]["per_arm"].items():
        print(f"  {arm}: " + ", ".join(f"{k} {v:.3g}" for k, v in numbers.items()))
    for line in machine_lines(results):
        print(line)
    print(f"wrote {out / 'result.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
