"""The researcher's pages: sign in with an API key, list studies, follow one live, close it.

    GET  /researcher/login                 a form for the API key
    POST /researcher/login                 key -> signed session cookie (12 h)
    POST /researcher/logout
    GET  /researcher/surveys               every study with its status
    GET  /researcher/surveys/{sid}         live status, per-pair counts, links to statistics and exports
    POST /researcher/surveys/{sid}/close   (CSRF-protected form)
"""
from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from app.errors import excerpt
from app.deps import get_db
from app.keys import find_key
from app.survey import access, security, studies
from app.survey.researcher_auth import session_key
from app.survey.web import message, render
from worker.db import utcnow

router = APIRouter(prefix="/researcher", include_in_schema=False)


def _login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/researcher/login?next={quote(request.url.path)}", status_code=303)


def _safe_next(target: str | None) -> str:
    # Only paths on this server: an open redirect would hand the session to another site.
    if (target and target.startswith("/researcher/") and "\\" not in target and target.isprintable()
            and " " not in target):
        return target
    return "/researcher/surveys"


@router.get("")
def home() -> RedirectResponse:
    return RedirectResponse("/researcher/surveys", status_code=303)


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    return render(request, "survey/researcher_login.html", {"title": "Researcher sign-in", "next": _safe_next(next),
                                                            "error": None})


@router.post("/login")
def login(request: Request, api_key: Annotated[str | None, Form()] = None,
          next: Annotated[str | None, Form()] = None, session: Session = Depends(get_db)) -> Response:
    key = find_key(session, (api_key or "").strip())
    if key is None:
        return render(request, "survey/researcher_login.html", {
            "title": "Researcher sign-in", "next": _safe_next(next),
            "error": "That API key is not recognised or was revoked. Create one with: rguide keys create --name NAME"},
            status_code=401)
    key.last_used_at = utcnow()
    session.commit()
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(security.RESEARCHER_COOKIE, security.researcher_session(request.app.state.session_secret, key.id,
                                                                         key.key_hash),
                        max_age=security.RESEARCHER_SESSION_SECONDS, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/researcher/login", status_code=303)
    response.delete_cookie(security.RESEARCHER_COOKIE, path="/")
    return response


@router.get("/surveys")
def survey_list(request: Request, session: Session = Depends(get_db)) -> Response:
    key = session_key(request, session)
    if key is None:
        return _login_redirect(request)
    rows = [studies.summary(session, studies.refresh(session, s)) for s in studies.list_studies(session, key, 500)]
    return render(request, "survey/researcher_list.html", {"title": "Studies", "studies": rows, "key": key})


@router.get("/surveys/{study_id}")
def survey_page(study_id: str, request: Request, session: Session = Depends(get_db)) -> Response:
    key = session_key(request, session)
    if key is None:
        return _login_redirect(request)
    study = studies.get_study(session, study_id)
    if study is None or not access.can_see(session, key, study):
        return message(request, "Study not found", f"There is no study {excerpt(study_id, 40)!r}.", 404,
                       link="/researcher/surveys", link_text="All studies")
    study = studies.refresh(session, study)
    info = studies.summary(session, study, base_url=str(request.base_url), with_pairs=True)
    cookie = request.cookies.get(security.RESEARCHER_COOKIE, "")
    live = study.status in ("generating", "open")
    return render(request, "survey/researcher_study.html", {
        "title": study.title, "s": info, "live": live, "csrf": security.researcher_csrf(request.app.state.session_secret, cookie),
        "prolific_url": info["links"]["rater_url"]
        + "?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"},
        headers={"Refresh": "10"} if live else None)


@router.post("/surveys/{study_id}/close")
def survey_close(study_id: str, request: Request, csrf: Annotated[str | None, Form()] = None,
                 session: Session = Depends(get_db)) -> Response:
    key = session_key(request, session)
    if key is None:
        return _login_redirect(request)
    cookie = request.cookies.get(security.RESEARCHER_COOKIE, "")
    if not security.researcher_csrf_ok(request.app.state.session_secret, cookie, csrf):
        return message(request, "Not closed", "The form's CSRF token is missing or does not match your session; "
                       "reload the study page and try again.", 403, link=f"/researcher/surveys/{study_id}")
    study = studies.get_study(session, study_id)
    if study is None or not access.can_see(session, key, study):
        return message(request, "Study not found", f"There is no study {excerpt(study_id, 40)!r}.", 404)
    try:
        studies.close_study(session, studies.refresh(session, study))
    except studies.StudyStateError as exc:
        return message(request, "Not closed", str(exc), 409, link=f"/researcher/surveys/{study_id}")
    return RedirectResponse(f"/researcher/surveys/{study_id}", status_code=303)
