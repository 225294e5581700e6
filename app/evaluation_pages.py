"""The researcher's evaluation pages: every evaluation of the signed-in key, and one with its progress over the
shards and its table, row by row as they complete.

    GET /researcher/evaluations          the list
    GET /researcher/evaluations/{id}     progress (refreshing while it runs), the rows so far, the table
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from app.analysis_pages import markdown_blocks
from app.api.evaluations import resource
from app.api.job_routes import may_see
from app.deps import get_db
from app.errors import excerpt
from app.survey.researcher_auth import login_redirect, session_key
from app.survey.web import message, render
from worker import evaluation_jobs

router = APIRouter(prefix="/researcher/evaluations", include_in_schema=False)


@router.get("")
def evaluation_list(request: Request, session: Session = Depends(get_db)) -> Response:
    key = session_key(request, session)
    if key is None:
        return login_redirect(request)
    rows = [resource(session, e) for e in evaluation_jobs.list_for(session, None if key.is_admin else key.id, 200)]
    return render(request, "evaluation/list.html", {"title": "Evaluations", "evaluations": rows, "key": key})


@router.get("/{evaluation_id}")
def evaluation_page(evaluation_id: str, request: Request, session: Session = Depends(get_db)) -> Response:
    key = session_key(request, session)
    if key is None:
        return login_redirect(request)
    ev = evaluation_jobs.get(session, evaluation_id)
    if not may_see(ev, key):
        return message(request, "Evaluation not found", f"There is no evaluation {excerpt(evaluation_id, 40)!r}.",
                       404, link="/researcher/evaluations", link_text="All evaluations")
    info = resource(session, ev)
    live = info["status"] in ("queued", "running")
    blocks = markdown_blocks(ev.result["markdown"]) if ev.result else []
    return render(request, "evaluation/detail.html", {"title": f"Evaluation {ev.id}", "e": info, "live": live,
                                                      "blocks": blocks},
                  headers={"Refresh": "5"} if live else None)
