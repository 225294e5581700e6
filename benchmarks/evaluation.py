"""An evaluation in one process, cut into shards in one process, and on the service with 1 and 2 workers.

    .venv/bin/python benchmarks/evaluation.py [--preset demo] [--guidance none,robust] [--per-class 4]
                                              [--steps 10] [--shard-size 10] [--threads 1]

All in this same run, on the same seeds and settings (feature blocks of
--shard-size images):

1. in-process: ``run_evaluation`` (``rguide evaluate``), models loaded and
   the real-image reference stored beforehand;
2. shards:     the same rows as ``compute_shard`` per shard plus the merge
   (``row_result``) in this process -> shard overhead = shards / in-process
   (smaller sampling batches, per-shard feature passes, the merge);
3. service:    ``rguide up --workers W`` (SQLite + filesystem broker in a
   temporary directory), a warm-up evaluation (loads the models and stores
   the reference), then POST /v1/evaluations and poll until succeeded, for
   W = 1 and 2 -> speed-up = time(1 worker) / time(2 workers), and service
   overhead = time(1 worker) / in-process.

It also prints the largest |FID difference| between the service's rows and
the in-process rows (expected 0 up to float rounding, below 1e-6).
Every process uses --threads torch threads; on a 2-core machine two workers
share the cores with each other and with this process, so expect a speed-up
near 1: the point is that sharding adds no large overhead.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service import REPO, free_port, wait_ready  # noqa: E402


def start_service(data_dir: Path, port: int, preset: str, threads: int, workers: int) -> subprocess.Popen:
    env = {**os.environ, "RGUIDE_DATA_DIR": str(data_dir), "RGUIDE_RATE_LIMIT": "0",
           "RGUIDE_REAPER_INTERVAL_SECONDS": "2"}
    log = open(data_dir / "service.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "rguide", "up", "--port", str(port), "--preload", preset,
                             "--threads", str(threads), "--workers", str(workers)], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def create_key(data_dir: Path) -> str:
    env = {**os.environ, "RGUIDE_DATA_DIR": str(data_dir)}
    out = subprocess.run([sys.executable, "-m", "rguide", "keys", "create", "--name", "bench"], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0].strip()


def evaluate_on_service(http: httpx.Client, key: str, body: dict, timeout: float = 3600) -> tuple[float, dict]:
    hdr = {"Authorization": f"Bearer {key}"}
    start = time.perf_counter()
    r = http.post("/v1/evaluations", json=body, headers=hdr)
    r.raise_for_status()
    url = r.json()["links"]["self"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = http.get(url, headers=hdr).json()
        if ev["status"] in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.2)
    elapsed = time.perf_counter() - start
    if ev["status"] != "succeeded":
        raise SystemExit(f"evaluation {ev['id']} {ev['status']}: {ev['shards']}")
    return elapsed, ev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--guidance", default="none,robust")
    ap.add_argument("--scales", default="1")
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--steps", default="10")
    ap.add_argument("--shard-size", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from model_core.evaluation import shards as sh
    from model_core.evaluation.metrics import load_extractor
    from model_core.evaluation.plan import plan, shards
    from model_core.evaluation.quality import EvalSettings, run_evaluation
    from model_core.pipeline import get_pipeline

    torch.set_num_threads(args.threads)
    methods = [m for m in args.guidance.split(",") if m]
    scales = [float(s) for s in args.scales.split(",")]
    settings = EvalSettings(preset=args.preset, methods=methods, scales=scales, per_class=args.per_class,
                            steps=args.steps, seed=args.seed, feature_batch=args.shard_size)
    body = {"preset": args.preset, "methods": methods, "scales": scales, "per_class": args.per_class,
            "steps": args.steps, "seed": args.seed, "feature_batch": args.shard_size, "shard_size": args.shard_size}
    p = plan(settings)
    pipe = get_pipeline(args.preset)
    extractor = load_extractor(p.feature_kind, p.feature_weights)
    cut = shards(p, args.shard_size)
    print(f"{args.preset}: {len(p.rows)} rows of {p.n} images ({len(p.rows) * p.n} in all), steps {args.steps}, "
          f"{len(cut)} shards of {args.shard_size}; {args.threads} torch thread(s) per process")

    with tempfile.TemporaryDirectory(prefix="rguide-bench-eval-") as tmp:
        tmp = Path(tmp)
        ref_dir = tmp / "reference"
        ref = sh.real_reference(p, extractor, ref_dir)       # stored before any timing
        pipe.sample([0], [0], methods[-1], None, args.steps)  # warm-up

        start = time.perf_counter()
        one = run_evaluation(settings, tmp / "inproc", progress=False, reference_dir=ref_dir)
        t_inproc = time.perf_counter() - start

        start = time.perf_counter()
        parts: dict[int, list] = {}
        for s in cut:
            parts.setdefault(s.row, []).append(sh.compute_shard(p, p.rows[s.row], s.start, s.stop, pipe, extractor))
        merged = {}
        for row in p.rows:
            outs = parts[row.index]
            import numpy as np

            preds = [o.predictions for o in outs if o.predictions is not None]
            merged[row.index] = sh.row_result(p, row, np.concatenate([o.features for o in outs]),
                                              np.concatenate(preds) if preds else None, ref.features,
                                              sum(o.seconds for o in outs) / p.n)
        t_shards = time.perf_counter() - start
        diff_local = max(abs(merged[i]["fid"] - r["fid"]) for i, r in enumerate(one["rows"]))

        served = {}
        for workers in (1, 2):
            data_dir, port = tmp / f"svc{workers}", free_port()
            data_dir.mkdir()
            proc = start_service(data_dir, port, args.preset, args.threads, workers)
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
                    wait_ready(http, proc, data_dir / "service.log")
                    key = create_key(data_dir)
                    # Warm-up: every worker loads its models; the first stores the real-image reference.
                    evaluate_on_service(http, key, {**body, "per_class": 1, "shard_size": 1, "feature_batch": 1,
                                                    "methods": methods[:1], "seed": 10_000})
                    served[workers] = evaluate_on_service(http, key, body)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)

    t1, ev1 = served[1]
    t2, ev2 = served[2]
    diff_service = max(abs(r["fid"] - o["fid"]) for ev in (ev1, ev2)
                       for r, o in zip(ev["report"]["rows"], one["rows"]))
    n = len(p.rows) * p.n
    print(f"in-process rguide evaluate:   {t_inproc:7.1f} s  ({t_inproc / n:.3f} s/image)")
    print(f"shards in one process:        {t_shards:7.1f} s  -> shard overhead {t_shards / t_inproc:.2f}x")
    print(f"service, 1 worker:            {t1:7.1f} s  -> service overhead {t1 / t_inproc:.2f}x in-process")
    print(f"service, 2 workers:           {t2:7.1f} s  -> speed-up {t1 / t2:.2f}x over 1 worker")
    print(f"largest |FID difference| to in-process: shards {diff_local:.2e}, service {diff_service:.2e}")


if __name__ == "__main__":
    main()
