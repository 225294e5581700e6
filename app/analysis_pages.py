"""The researcher's analysis pages: the list of a key's analyses, and one analysis with its pictures,
numbers, settings and how to reproduce it.

    GET /researcher/analyses          every analysis of the signed-in key (all, for an admin key)
    GET /researcher/analyses/{id}     status (refreshing while it runs), PNGs, tables, settings, inputs

Signed in as on the survey pages (``app.survey.researcher``); the pictures and
files are the API's URLs, which take the same session cookie.
"""
from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from app.api.analyses import resource
from app.api.job_routes import may_see
from app.deps import get_db, get_settings
from app.errors import excerpt
from app.survey.researcher_auth import login_redirect, session_key
from app.survey.web import message, render
from model_core.analysis import kinds
from worker import analysis_jobs, media
from worker.config import Settings

router = APIRouter(prefix="/researcher/analyses", include_in_schema=False)


def markdown_blocks(text: str) -> list[dict]:
    """The analyses' markdown (headings with their level, pipe tables, paragraphs) as blocks a template renders,
    escaped."""
    blocks: list[dict] = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line:
            continue
        if line.startswith("|"):
            cells = [c.strip().replace("`", "") for c in line.strip("|").split("|")]
            if all(set(c) <= set("-: ") for c in cells):
                continue  # the header's separator row
            if blocks and blocks[-1]["type"] == "table":
                blocks[-1]["rows"].append(cells)
            else:
                blocks.append({"type": "table", "head": cells, "rows": []})
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            blocks.append({"type": "heading", "level": level, "text": line.lstrip("#").strip().replace("`", "")})
        else:
            blocks.append({"type": "text", "text": line.replace("`", "")})
    return blocks


@router.get("")
def analysis_list(request: Request, session: Session = Depends(get_db)) -> Response:
    key = session_key(request, session)
    if key is None:
        return login_redirect(request)
    rows = [resource(j) for j in analysis_jobs.list_for(session, None if key.is_admin else key.id, 200)]
    return render(request, "analysis/list.html", {"title": "Analyses", "analyses": rows, "key": key,
                                                  "kinds": kinds.entries()})


@router.get("/{job_id}")
def analysis_page(job_id: str, request: Request, session: Session = Depends(get_db),
                  settings: Settings = Depends(get_settings)) -> Response:
    key = session_key(request, session)
    if key is None:
        return login_redirect(request)
    job = analysis_jobs.get(session, job_id)
    if not may_see(job, key):
        return message(request, "Analysis not found", f"There is no analysis {excerpt(job_id, 40)!r}.", 404,
                       link="/researcher/analyses", link_text="All analyses")
    info = resource(job)
    tables = []
    for f in job.files or []:
        if f["media_type"] == "text/markdown":
            try:
                text = media.resolve(settings.media_dir, f["path"]).read_text()
            except OSError:
                continue
            tables.append({"name": f["name"], "blocks": markdown_blocks(text)})
    live = job.status in ("queued", "running")
    kind = kinds.get(job.kind)
    settings_rows = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in job.settings.items()]
    return render(request, "analysis/detail.html", {
        "title": f"{kind.paper}: {job.kind}", "a": info, "kind": kind, "tables": tables, "live": live,
        "settings_rows": settings_rows,
        "pictures": [f for f in info["files"] if f["media_type"] == "image/png"]},
        headers={"Refresh": "5"} if live else None)
