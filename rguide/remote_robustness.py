"""``rguide robustness --on-workers URL``: submit the report to the service and follow it to its files.

The request carries the in-process command's settings (flag names map to
``POST /v1/robustness-reports`` fields); a worker runs it. The command keeps a
progress bar over the report's phases and writes ``OUT/report.json``,
``OUT/report.md`` and ``OUT/per_sample.json`` like the in-process run.
Interrupting it leaves the report running on the worker; ``--follow ID``
follows it again. Standard library HTTP only (``rguide.remote_evaluate._call``).
"""
from __future__ import annotations

import argparse
import os
import time

from rguide import remote_evaluate
from rguide.cli import CLIError

LOCAL_ONLY = {"device": "--device"}


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def request_body(args: argparse.Namespace) -> dict:
    body: dict = {"attacks": _csv(args.attacks), "settings": _csv(args.settings), "defences": _csv(args.defences),
                  "n": args.n, "seed": args.seed, "eot": args.eot, "sanity_n": args.sanity_n,
                  "batch_size": args.batch_size,
                  "diffusion_whitebox_autoattack": bool(args.diffusion_whitebox_autoattack)}
    try:
        body["sanity_eps"] = [float(v) for v in _csv(args.sanity_eps)]
        body["sanity_eps_l2"] = [float(v) for v in _csv(args.sanity_eps_l2)]
    except ValueError:
        raise CLIError("--sanity-eps/--sanity-eps-l2: write comma-separated numbers") from None
    for name in ("preset", "schedule", "attack_timesteps", "diffusion_whitebox_n", "diffusion_whitebox_steps"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.diffusion_gradients is not None:
        body["diffusion_gradients"] = _csv(args.diffusion_gradients)
    return body


def run_on_workers(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    base = args.on_workers
    if not base:
        raise CLIError("--follow ID needs --on-workers URL (the service the report runs on)")
    given = [flag for name, flag in LOCAL_ONLY.items() if getattr(args, name, None) not in (None, "cpu")]
    if given:
        raise CLIError(f"{', '.join(given)}: with --on-workers the worker uses its own device; leave these out")
    key = args.api_key or os.environ.get("RGUIDE_API_KEY")
    if not key:
        raise CLIError("--on-workers needs a researcher key: --api-key KEY or $RGUIDE_API_KEY")
    call = remote_evaluate._call
    if args.follow:
        job = call(base, key, "GET", f"/v1/robustness-reports/{args.follow}")
    else:
        job = call(base, key, "POST", "/v1/robustness-reports", request_body(args))
    jid = job["id"]
    print(f"robustness report {jid} on {base}; Ctrl-C leaves it running, --follow {jid} follows it again")
    bar = tqdm(total=1, desc=f"robustness {job['preset']} on a worker", unit="step", disable=args.no_progress)
    try:
        while True:
            bar.total = max(job["progress_total"], 1)
            bar.n = job["progress_step"]
            bar.refresh()
            if job["status"] in ("succeeded", "failed", "canceled"):
                break
            time.sleep(2.0)
            job = call(base, key, "GET", f"/v1/robustness-reports/{jid}")
    except KeyboardInterrupt:
        bar.close()
        print(f"\nstopped following; report {jid} goes on on the worker: rguide robustness --on-workers {base} "
              f"--follow {jid} --out {args.out}")
        return 130
    bar.close()
    if job["status"] != "succeeded":
        raise CLIError(f"robustness report {jid} {job['status']}: {job.get('error') or 'no error recorded'}")
    per_sample = call(base, key, "GET", job["links"]["per_sample"])
    from model_core.robustness.report import to_markdown, write_report

    paths = write_report({"report": job["report"], "per_sample": per_sample}, args.out)
    print(to_markdown(job["report"]))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0

