"""What the generation service adds to sampling, and what batching waiting requests saves.

    .venv/bin/python benchmarks/service.py [--preset tiny] [--steps 50] [--guidance robust] [--repeats 3]
                                           [--threads 1] [--concurrent 8]

Starts `rguide up` (embedded defaults: SQLite + filesystem broker, in a
temporary data directory; or DATABASE_URL / REDIS_URL when set) with one
worker, and measures in this same run:

1. raw:        ``Pipeline.sample`` of a one-image request in this process (the
               model already loaded), best of --repeats;
   end to end: POST /v1/generations, follow the job's events (or poll GET
               every 10 ms) until succeeded, GET the PNG; best of --repeats
               after a warm-up request. Raw and end-to-end runs alternate.
   -> overhead ratio = end to end / raw (queueing, DB writes, PNG encoding,
      the broker's delivery latency, HTTP).
2. sequential: --concurrent one-image requests, each sent after the previous
               one finished;
   concurrent: the same requests sent at once (the worker claims the waiting
               look-alikes and samples them as one batch).
   -> ratio = concurrent / sequential (below 1: batching pays).

Both processes use --threads torch threads, so raw and served sampling get
the same CPU budget.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(data_dir: Path, port: int, preset: str, threads: int) -> subprocess.Popen:
    env = {**os.environ, "RGUIDE_DATA_DIR": str(data_dir), "RGUIDE_RATE_LIMIT": "0"}
    log = open(data_dir / "service.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "rguide", "up", "--port", str(port), "--preload", preset,
                             "--threads", str(threads)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_ready(http: httpx.Client, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"rguide up exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if http.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("service not ready in time")


def generate(http: httpx.Client, body: dict, poll: float = 0.01, follow: str = "events",
             ids: list | None = None) -> float:
    """Seconds from POST to the PNG in hand.

    ``follow="events"`` waits on the job's server-sent events, as a client
    that wants the result soon should (one open request, no traffic while it
    samples); ``"poll"`` GETs the job every ``poll`` seconds.
    """
    import json

    start = time.perf_counter()
    r = http.post("/v1/generations", json=body)
    r.raise_for_status()
    location = r.headers["location"]
    if ids is not None:
        ids.append(r.json()["id"])
    if follow == "events":
        job, event = None, None
        with http.stream("GET", f"{location}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "done":
                    job = json.loads(line.split(":", 1)[1])
                    break
        if job is None:
            raise SystemExit(f"the event stream of {location} ended without a done event")
    else:
        while True:
            job = http.get(location).json()
            if job["status"] in ("succeeded", "failed", "canceled"):
                break
            time.sleep(poll)
    if job["status"] != "succeeded":
        raise SystemExit(f"job {job['id']} {job['status']}: {job.get('error')}")
    for im in job["images"]:
        http.get(im["url"]).raise_for_status()
    return time.perf_counter() - start


def _stamp(line: str) -> float | None:
    """Seconds of a worker log line's '[YYYY-mm-dd HH:MM:SS,mmm: ...' timestamp."""
    from datetime import datetime

    try:
        return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def worker_split(log_text: str, job_id: str) -> tuple[float, float] | None:
    """(sampling, storing) seconds of one job by the worker's log: from its 'sampling ...' line to
    its last step, and from there to 'succeeded in'."""
    marks: dict[str, float] = {}
    for line in log_text.splitlines():
        if job_id not in line:
            continue
        if "sampling " in line:
            marks["start"] = _stamp(line)
        elif ": step " in line:
            step, total = line.rsplit(": step ", 1)[1].split()[0].split("/")
            if step == total:
                marks["sampled"] = _stamp(line)
        elif "succeeded in" in line:
            marks["stored"] = _stamp(line)
    if None in marks.values() or len(marks) < 3:
        return None
    return marks["sampled"] - marks["start"], marks["stored"] - marks["sampled"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", default="50")
    ap.add_argument("--guidance", default="robust", choices=("none", "vanilla", "robust"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--concurrent", type=int, default=8)
    ap.add_argument("--log", type=Path, default=None, help="keep the service's log here")
    ap.add_argument("--follow", default="events", choices=("events", "poll"),
                    help="how the client waits for a job: its server-sent events (default) or GET every 10 ms "
                         "(50 ms for the sequential/concurrent runs)")
    args = ap.parse_args()

    import torch

    from model_core.pipeline import get_pipeline

    torch.set_num_threads(args.threads)
    body = {"preset": args.preset, "class_labels": [1], "guidance": args.guidance, "steps": args.steps}
    pipe = get_pipeline(args.preset)

    def raw_once(seed: int) -> float:
        start = time.perf_counter()
        pipe.sample([1], [seed], args.guidance, None, args.steps)
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="rguide-bench-") as tmp:
        data_dir, port = Path(tmp), free_port()
        proc = start_service(data_dir, port, args.preset, args.threads)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
                wait_ready(http, proc, data_dir / "service.log")
                raw_once(0)  # warm-ups
                generate(http, {**body, "seed": 0}, follow=args.follow)  # connections, first PNG
                # Raw and served runs alternate, so that a machine whose load drifts (other jobs,
                # frequency) weighs on both alike; the service sits idle during a raw run.
                raws, e2es, e2e_ids = [], [], []
                for i in range(args.repeats):
                    raws.append(raw_once(1 + i))
                    e2es.append(generate(http, {**body, "seed": 1 + i}, follow=args.follow, ids=e2e_ids))
                raw, e2e = min(raws), min(e2es)
                split = worker_split((data_dir / "service.log").read_text(errors="replace"),
                                     e2e_ids[e2es.index(e2e)])

                # Both runs poll every 50 ms: n clients polling every 10 ms would
                # steal the CPU the worker needs on a small machine.
                n = args.concurrent
                start = time.perf_counter()
                for i in range(n):
                    generate(http, {**body, "seed": 100 + i}, poll=0.05, follow=args.follow)
                sequential = time.perf_counter() - start

                log = data_dir / "service.log"
                before = log.read_text(errors="replace").count("sampling ")
                times: list[float] = []
                start = time.perf_counter()
                threads = [threading.Thread(target=lambda s: times.append(generate(http, {**body, "seed": s}, 0.05, args.follow)),
                                            args=(200 + i,)) for i in range(n)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                concurrent = time.perf_counter() - start
                assert len(times) == n
                batches = [int(line.split("sampling ", 1)[1].split()[0])
                           for line in log.read_text(errors="replace").splitlines() if "sampling " in line][before:]
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=60)
            if args.log:
                args.log.write_bytes((data_dir / "service.log").read_bytes())

    print(f"preset {args.preset}, guidance {args.guidance}, steps {args.steps}, torch threads {args.threads}, "
          f"client follows by {'server-sent events' if args.follow == 'events' else 'polling'}, "
          f"broker {'redis' if os.environ.get('REDIS_URL') else 'filesystem'}, "
          f"database {'external' if os.environ.get('DATABASE_URL') else 'sqlite'}")
    print(f"one image, raw in-process sampling:  {raw:7.3f} s")
    print(f"one image, end to end via the API:   {e2e:7.3f} s")
    print(f"  service overhead ratio (e2e / raw): {e2e / raw:6.2f}x   (raw runs {', '.join(f'{t:.3f}' for t in raws)};"
          f" e2e runs {', '.join(f'{t:.3f}' for t in e2es)})")
    if split:
        print(f"  the best e2e run in the worker's log: sampling {split[0]:.3f} s, PNG + store {split[1]:.3f} s; "
              f"the remaining {e2e - sum(split):.3f} s is HTTP, broker, claim and the notification")
    print(f"{n} one-image requests, sequential:    {sequential:7.3f} s")
    print(f"{n} one-image requests, concurrent:    {concurrent:7.3f} s")
    print(f"  concurrent / sequential:            {concurrent / sequential:6.2f}x   "
          f"(the worker sampled them in batches of {batches})")


if __name__ == "__main__":
    main()
