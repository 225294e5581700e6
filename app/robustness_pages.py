"""The researcher's robustness-report pages: the key's reports, and one report with its progress, settings and,
once it succeeded, the report itself with its sanity checks picked out.

    GET /researcher/robustness          every report of the signed-in key (all, for an admin key)
    GET /researcher/robustness/{id}     status (refreshing while it runs), the report, its settings, downloads

Signed in as on the survey pages (``app.survey.researcher``); the downloads are the
API's URLs (``app.api.robustness``), whose GETs take the same session cookie.
"""
from __future__ import annotations

import json
import re

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from app.analysis_pages import markdown_blocks
from app.api.robustness import resource
from app.api.job_routes import may_see
from app.deps import get_db
from app.errors import excerpt
from app.survey.researcher_auth import login_redirect, session_key
from app.survey.web import message, render
from worker import robustness_jobs

PAGES = "/researcher/robustness"
router = APIRouter(prefix=PAGES, include_in_schema=False)

# model_core.robustness.report writes each sanity check as "- PASS: <check>: <JSON detail>".
_CHECK = re.compile(r"- (PASS|FAIL): ([^:]+?)(?:: (.*))?$")


def _detail(text: str | None) -> str:
    """A check's JSON detail as "key: value · ..." (the raw text if it is not a JSON object)."""
    try:
        detail = json.loads(text or "")
    except ValueError:
        return text or ""
    if not isinstance(detail, dict):
        return text or ""
    return " · ".join(f"{k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in detail.items())


def report_blocks(markdown: str) -> list[dict]:
    """The report's Markdown as ``markdown_blocks``, its bullet lines grouped into lists and its sanity
    checks into a list of checks (passed, name, detail), headings with an anchor."""
    blocks: list[dict] = []
    for b in markdown_blocks(markdown):
        if b["type"] == "heading":
            b["anchor"] = re.sub(r"[^a-z0-9]+", "-", b["text"].lower()).strip("-")
        elif b["type"] == "text" and b["text"].startswith("- "):
            m = _CHECK.match(b["text"])
            item = ({"passed": m[1] == "PASS", "check": m[2], "detail": _detail(m[3])} if m
                    else {"text": b["text"][2:]})
            kind = "checks" if m else "list"
            if blocks and blocks[-1]["type"] == kind:
                blocks[-1]["entries"].append(item)
            else:
                blocks.append({"type": kind, "entries": [item]})
            continue
        blocks.append(b)
    return blocks


def _row(job) -> dict:
    info = resource(job)
    info["page"] = f"{PAGES}/{job.id}"
    return info


@router.get("")
def robustness_list(request: Request, session: Session = Depends(get_db)) -> Response:
    key = session_key(request, session)
    if key is None:
        return login_redirect(request)
    rows = [_row(j) for j in robustness_jobs.list_for(session, None if key.is_admin else key.id, 200)]
    return render(request, "robustness/list.html", {"title": "Robustness reports", "reports": rows, "key": key})


@router.get("/{job_id}")
def robustness_page(job_id: str, request: Request, session: Session = Depends(get_db)) -> Response:
    key = session_key(request, session)
    if key is None:
        return login_redirect(request)
    job = robustness_jobs.get(session, job_id)
    if not may_see(job, key):
        return message(request, "Robustness report not found",
                       f"There is no robustness report {excerpt(job_id, 40)!r}.", 404,
                       link=PAGES, link_text="All robustness reports")
    info = _row(job)
    live = job.status in ("queued", "running")
    report = info["report"]
    sanity = report.get("sanity", []) if report else []
    settings_rows = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in job.settings.items()]
    return render(request, "robustness/detail.html", {
        "title": f"Robustness report: {job.preset}", "r": info, "s": job.settings, "live": live,
        "blocks": report_blocks(job.markdown) if report and job.markdown else [],
        "sanity_total": len(sanity), "sanity_failed": sum(not c.get("passed") for c in sanity),
        "settings_rows": settings_rows},
        headers={"Refresh": "5"} if live else None)
