"""``rguide evaluate --on-workers URL``: submit an evaluation to the service and follow it to its table.

The request carries the same settings as the in-process command (flag names
map to ``POST /v1/evaluations`` fields); the workers sample it in shards.
The command prints each row as it completes, keeps a progress bar over all
shards, and writes ``OUT/results.json`` and ``OUT/results.md`` (and the
quality-against-cost plot with several samplers) like the in-process run.
Interrupting it leaves the evaluation running on the workers; ``--resume ID``
follows it again (and re-runs shards that failed or were canceled).
Standard library HTTP only: nothing to install on a researcher's laptop.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from rguide.cli import CLIError

LOCAL_ONLY = {"features": "--features", "feature_weights": "--feature-weights", "real": "--real",
              "device": "--device"}


def _call(base: str, key: str, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method=method, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            parsed = json.loads(detail)
            if isinstance(parsed.get("detail"), list):
                detail = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:])}: {e['msg']}" for e in parsed["detail"])
            else:
                detail = parsed.get("detail") or parsed.get("title") or detail
        except (ValueError, AttributeError):
            pass
        raise CLIError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise CLIError(f"cannot reach the service at {base}: {exc.reason}") from None


def request_body(args: argparse.Namespace) -> dict:
    body: dict = {"methods": [m.strip() for m in args.guidance.split(",") if m.strip()],
                  "per_class": args.per_class, "seed": args.seed, "k": args.k, "seed_noise": bool(args.seed_noise),
                  "feature_batch": args.feature_batch, "shard_size": args.shard_size}
    if args.preset:
        body["preset"] = args.preset
    if args.scales.strip().lower() != "preset":
        try:
            body["scales"] = [float(x) for x in args.scales.split(",") if x.strip()]
        except ValueError:
            raise CLIError(f"--scales {args.scales!r}: write comma-separated numbers") from None
    else:
        raise CLIError("--scales preset is for the in-process run; give the scales as numbers with --on-workers")
    for field in ("steps", "sampler"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    if args.samplers:
        body["samplers"] = [x for x in args.samplers.split(",") if x.strip()]
    return body


def _row_line(row: dict) -> str:
    r = row["result"]
    scale = "-" if row["method"] == "none" else f"{row['scale']:g}"
    acc = f", label accuracy {r['label_accuracy']:.3f}" if r.get("label_accuracy") is not None else ""
    return (f"row {row['index']}: {row['sampler']}:{row['steps']} {row['method']} scale {scale}: FID {r['fid']:.2f}, "
            f"precision {r['precision']:.3f}, recall {r['recall']:.3f}{acc}")


def run_on_workers(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    base = args.on_workers
    if not base:
        raise CLIError("--resume ID needs --on-workers URL (the service the evaluation runs on)")
    given = [flag for name, flag in LOCAL_ONLY.items() if getattr(args, name, None) is not None]
    if given:
        raise CLIError(f"{', '.join(given)}: with --on-workers the workers use the preset's feature network and "
                       "real images as the server is configured; leave these out")
    key = args.api_key or os.environ.get("RGUIDE_API_KEY")
    if not key:
        raise CLIError("--on-workers needs a researcher key: --api-key KEY or $RGUIDE_API_KEY")
    if args.resume:
        ev = _call(base, key, "GET", f"/v1/evaluations/{args.resume}")
        if ev["status"] in ("failed", "canceled"):
            ev = _call(base, key, "POST", f"/v1/evaluations/{args.resume}/resume")
    else:
        ev = _call(base, key, "POST", "/v1/evaluations", request_body(args))
    eid = ev["id"]
    print(f"evaluation {eid}: {ev['num_images']} images in {ev['num_shards']} shards on {base} "
          f"(page: {base.rstrip('/')}{ev['links']['page']}); Ctrl-C leaves it running, "
          f"--resume {eid} follows it again")
    bar = tqdm(total=max(ev["progress_total"], 1), desc=f"evaluate {ev['preset']} on workers", unit="img-step",
               disable=args.no_progress)
    shown: set[int] = set()
    try:
        while True:
            for row in ev["rows"]:
                if row["result"] is not None and row["index"] not in shown:
                    shown.add(row["index"])
                    bar.write(_row_line(row))
            bar.n = ev["progress_total"] if ev["status"] == "succeeded" else ev["progress_step"]
            s = ev["shards"]
            bar.set_postfix(shards=f"{s['succeeded']}/{ev['num_shards']}", running=s["running"], refresh=False)
            bar.refresh()
            if ev["status"] in ("succeeded", "failed", "canceled"):
                break
            time.sleep(2.0)
            ev = _call(base, key, "GET", f"/v1/evaluations/{eid}")
    except KeyboardInterrupt:
        bar.close()
        print(f"\nstopped following; evaluation {eid} goes on on the workers: rguide evaluate --on-workers {base} "
              f"--resume {eid} --out {args.out}")
        return 130
    bar.close()
    if ev["status"] != "succeeded":
        raise CLIError(f"evaluation {eid} {ev['status']} ({ev['shards']['failed']} shard(s) failed); see "
                       f"{base.rstrip('/')}{ev['links']['shards']}; --resume {eid} runs them again")
    report = dict(ev["report"])
    markdown = report.pop("markdown")
    report["evaluation_id"] = eid
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if len(report["settings"]["samplers"]) > 1:
        from model_core.evaluation.cost_plot import plot_quality_against_cost

        report["plot"] = str(plot_quality_against_cost(report, out / "quality_vs_evaluations.png"))
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown)
    print(markdown)
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}" + (f" and {report['plot']}" if "plot" in report
                                                                          else ""))
    return 0
