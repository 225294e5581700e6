#!/usr/bin/env python
"""A small demo study run end to end against a running server, as a researcher would, with scripted raters.

    .venv/bin/rguide up &                                  # the service, on http://127.0.0.1:8000
    KEY=$(.venv/bin/rguide keys create --name demo)
    .venv/bin/python scripts/demo_study.py --url http://127.0.0.1:8000 --key "$KEY" --out demo-study/

It creates a study with the demo's default design (docs/survey.md, "The demo's default design"): preset
``demo-uncond`` (an unconditional digit model that only guidance steers), three arms seed-matched on every
item (robust and vanilla guidance at the preset's default scale, and no guidance), every arm pair shown; as a
Prolific study with its own exit codes and instructed attention checks, waits for the pairs to be generated, sends
scripted raters through the rater pages (plain form posts, as a browser without JavaScript does), closes the
study and saves what a researcher keeps: the report, Table 2 as CSV and LaTeX, the per-rater CSV, the votes,
the manifest, and (with Playwright and Chromium) screenshots of the report and the researcher page.

The raters are scripts, not people: their answers are drawn at random with fixed seeds (one prefers the
left-hand image, one answers Same to everything and ignores the checks, one stops half-way), so the
numbers show the mechanics of the study and the report, not a human preference.
"""
from __future__ import annotations

import argparse
import html
import json
import random
import re
import sys
import time
from pathlib import Path

import httpx

# The demo's default design (docs/survey.md): robust and vanilla at the preset's default scale, each seen against
# the other and against no guidance, whose images a rater can always tell apart from guided ones.
DEMO_PRESET = "demo-uncond"
DEMO_ARMS = [{"method": "robust", "name": "robust"}, {"method": "vanilla", "name": "vanilla"},
             {"method": "none", "name": "unguided"}]

PROFILES = [  # (name, P(left), P(right), P(same), follows checks, stops after)
    ("careful-1", 0.40, 0.40, 0.20, True, None),
    ("careful-2", 0.35, 0.45, 0.20, True, None),
    ("careful-3", 0.45, 0.35, 0.20, True, None),
    ("careful-4", 0.40, 0.30, 0.30, True, None),
    ("left-leaning", 0.70, 0.20, 0.10, True, None),
    ("straight-liner", 0.0, 0.0, 1.0, False, None),
    ("quitter", 0.40, 0.40, 0.20, True, 4),
]


def _field(page: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]*)"', page).group(1)


def _action(page: str, form_id: str | None = None) -> str:
    tag = re.search(rf'<form[^>]*id="{form_id}"[^>]*>' if form_id else r'<form method="post"[^>]*>', page).group(0)
    return html.unescape(re.search(r'action="([^"]*)"', tag).group(1))


def run_rater(url: str, study: dict, profile: tuple, seed: int) -> str:
    name, p_left, p_right, p_same, follows, stops = profile
    rng = random.Random(seed)
    pid = f"demo{seed:020d}"
    with httpx.Client(base_url=url, follow_redirects=True, timeout=60,
                      headers={"User-Agent": f"demo-study-script ({name})"}) as web:
        page = web.get(f"/s/{study['id']}", params={"PROLIFIC_PID": pid, "STUDY_ID": "demo", "SESSION_ID": name}).text
        page = web.post(_action(page), data={"csrf": _field(page, "csrf"), "consent": "yes"}).text
        answered = 0
        while 'id="exit"' not in page:
            if stops is not None and answered >= stops:
                return f"{name}: stopped after {answered} answers"
            check = re.search(r'id="check-instruction".*?<strong>(\w+)</strong>', page, re.S)
            if check and follows:
                answer = check.group(1).lower()
            else:
                answer = rng.choices(["left", "right", "same"], [p_left, p_right, p_same])[0]
            time.sleep(0.9)  # slower than the study's min_answer_ms, as a person would be
            page = web.post(_action(page, "vote-form"), data={"csrf": _field(page, "csrf"),
                                                              "pair": _field(page, "pair"), "answer": answer}).text
            answered += 1
        outcome = re.search(r'data-outcome="(\w+)"', page).group(1)
        code = re.search(r'id="(?:completion|exit)-code">([^<]+)<', page).group(1)
        return f"{name}: {answered} answers, outcome {outcome}, code {code}"


def screenshots(url: str, key: str, study_id: str, report: Path, out: Path) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("playwright not installed: no screenshots")
        return
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(report.resolve().as_uri())
        page.screenshot(path=str(out / "report.png"), full_page=True)
        page.goto(f"{url}/researcher/login?next=/researcher/surveys/{study_id}")
        page.fill("#api_key", key)
        with page.expect_navigation():
            page.click("button[type=submit]")
        page.screenshot(path=str(out / "researcher.png"), full_page=True)
        page.goto(f"{url}/researcher/surveys/{study_id}/raters")
        page.screenshot(path=str(out / "raters.png"), full_page=True)
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True, help="a researcher API key")
    parser.add_argument("--out", type=Path, default=Path("demo-study"))
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--preset", default=DEMO_PRESET, help=f"preset (default {DEMO_PRESET}, see docs/survey.md)")
    parser.add_argument("--two-arm", action="store_true",
                        help="the paper's design instead: robust vs vanilla at the preset's comparison scales")
    parser.add_argument("--export", metavar="STUDY_ID", default=None,
                        help="only save the files of this (closed) study again; create nothing")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    api = httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {args.key}"}, timeout=120)
    if args.export:
        return export(api, args, args.export)
    body = {"title": "Demo: robust vs vanilla guidance on MNIST digits", "preset": args.preset, "num_pairs": args.pairs,
            "seed": args.seed, "raters_per_pair": 6, "attention_checks": True, "attention_checks_per_rater": 2,
            "min_answer_ms": 800, "platform": "prolific", "completion_code": "DEMO-DONE",
            "exits": {"failed_checks": {"code": "DEMO-SCREENED"}, "no_consent": {"code": "DEMO-NOCONSENT"}}}
    if not args.two_arm:
        body.update(arms=DEMO_ARMS, design="all_pairs")
    r = api.post("/v1/surveys", json=body)
    r.raise_for_status()
    study = r.json()
    print(f"study {study['id']}: generating {study['generation']['jobs']} jobs", flush=True)
    started = time.monotonic()
    while (study := api.get(f"/v1/surveys/{study['id']}").json())["status"] == "generating":
        time.sleep(2)
    if study["status"] != "open":
        print(f"study {study['status']}: {study['error']}", file=sys.stderr)
        return 1
    print(f"open after {time.monotonic() - started:.0f} s; manifest sha256 {study['manifest_sha256']}", flush=True)
    for i, profile in enumerate(PROFILES):
        print(run_rater(args.url, study, profile, args.seed + i), flush=True)
    api.post(f"/v1/surveys/{study['id']}/close").raise_for_status()
    return export(api, args, study["id"])


def export(api: httpx.Client, args, sid: str) -> int:
    files = {"report.html": f"/v1/surveys/{sid}/report", "table2.csv": f"/v1/surveys/{sid}/table2?format=csv",
             "table2.tex": f"/v1/surveys/{sid}/table2?format=latex", "raters.csv": f"/v1/surveys/{sid}/raters",
             "votes.csv": f"/v1/surveys/{sid}/votes", "manifest.json": f"/v1/surveys/{sid}/manifest",
             "results.json": f"/v1/surveys/{sid}/results"}
    for name, path in files.items():
        r = api.get(path)
        r.raise_for_status()
        (args.out / name).write_bytes(r.content)
    summary = api.get(f"/v1/surveys/{sid}").json()
    (args.out / "study.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    screenshots(args.url, args.key, sid, args.out / "report.html", args.out)
    print(f"wrote {', '.join(sorted(p.name for p in args.out.iterdir()))} to {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
