"""The researcher's classification pages: the key's classification jobs, and one with its settings and, once it
succeeded, the predicted class and every class's probability.

    GET /researcher/classifications          every classification of the signed-in key (all, for an admin key)
    GET /researcher/classifications/{id}     status (refreshing while it runs), prediction, probabilities, settings

Signed in as on the survey pages (``app.survey.researcher``); the image is the
API's URL (``.../image.png``), which takes the same session cookie.
"""
from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from app.api.classifications import resource
from app.api.job_routes import may_see
from app.deps import get_db
from app.errors import excerpt
from app.survey.researcher_auth import login_redirect, session_key
from app.survey.web import message, render
from worker import classification_jobs

PAGES = "/researcher/classifications"
router = APIRouter(prefix=PAGES, include_in_schema=False)


def _row(job) -> dict:
    info = resource(job)
    info["page"] = f"{PAGES}/{job.id}"
    return info


@router.get("")
def classification_list(request: Request, session: Session = Depends(get_db)) -> Response:
    key = session_key(request, session)
    if key is None:
        return login_redirect(request)
    rows = [_row(j) for j in classification_jobs.list_for(session, None if key.is_admin else key.id, 200)]
    return render(request, "classification/list.html", {"title": "Classifications", "classifications": rows,
                                                        "key": key})


@router.get("/{job_id}")
def classification_page(job_id: str, request: Request, session: Session = Depends(get_db)) -> Response:
    key = session_key(request, session)
    if key is None:
        return login_redirect(request)
    job = classification_jobs.get(session, job_id)
    if not may_see(job, key):
        return message(request, "Classification not found", f"There is no classification {excerpt(job_id, 40)!r}.",
                       404, link=PAGES, link_text="All classifications")
    info = _row(job)
    live = job.status in ("queued", "running")
    result = job.result or {}
    probs = info["probabilities"] or []
    names = result.get("class_names") or [str(i) for i in range(len(probs))]
    classes = [{"index": i, "name": names[i] if i < len(names) else str(i), "p": p} for i, p in enumerate(probs)]
    # The classifier's own description (timestep policy, draws per stage...) beside the request's settings.
    described = {k: v for k, v in (result.get("settings") or {}).items() if k not in job.settings}
    settings_rows = [(k, v if isinstance(v, str) else json.dumps(v))
                     for k, v in {"preset": job.preset, **job.settings, **described}.items()]
    return render(request, "classification/detail.html", {
        "title": f"Classification {job.id}", "c": info, "live": live, "classes": classes,
        "seconds": result.get("seconds"), "settings_rows": settings_rows},
        headers={"Refresh": "5"} if live else None)
