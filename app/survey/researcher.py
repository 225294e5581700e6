"""The researcher's pages: sign in with an API key, list studies, follow one live, run it.

    GET  /researcher/login                 a form for the API key
    POST /researcher/login                 key -> signed session cookie (12 h)
    POST /researcher/logout
    GET  /researcher/surveys               every study with its status
    GET  /researcher/surveys/{sid}         live status, exit codes, per-pair counts, links to statistics and exports
                                           (?preferences=1: the per-pair preference counts while collecting)
    GET  /researcher/surveys/{sid}/close   "close this study?" (the confirmation)
    POST /researcher/surveys/{sid}/close   close (CSRF-protected form, from the confirmation)
    POST /researcher/surveys/{sid}/reopen
    POST /researcher/surveys/{sid}/caps    raise raters per pair / pairs per rater, change the time-out
    GET  /researcher/surveys/{sid}/raters  the per-rater table (approvals), with exclude / include / delete
    POST /researcher/surveys/{sid}/raters/{rid}/exclude | include
    GET  /researcher/surveys/{sid}/raters/{rid}/delete   "delete this participant's data?"
    POST /researcher/surveys/{sid}/raters/{rid}/delete

Every POST carries the page's CSRF token (an HMAC of the session cookie).
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from app.errors import Answer, excerpt
from app.deps import get_db
from app.keys import find_key
from app.survey import access, exits, quality, security, studies
from app.survey.researcher_auth import login_redirect, session_key
from app.survey.web import message, render
from worker.db import utcnow

router = APIRouter(prefix="/researcher", include_in_schema=False)


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
        return login_redirect(request)
    rows = [studies.summary(session, studies.refresh(session, s)) for s in studies.list_studies(session, key, 500)]
    return render(request, "survey/researcher_list.html", {"title": "Studies", "studies": rows, "key": key})


def _signed_in(request: Request, session: Session, study_id: str):
    """(key, study) for a signed-in researcher who may see the study; else the response to send."""
    key = session_key(request, session)
    if key is None:
        return login_redirect(request)
    study = studies.get_study(session, study_id)
    if study is None or not access.can_see(session, key, study):
        return message(request, "Study not found", f"There is no study {excerpt(study_id, 40)!r}.", 404,
                       link="/researcher/surveys", link_text="All studies")
    return key, studies.refresh(session, study)


def signed_in(study_id: str, request: Request, session: Session = Depends(get_db)):
    """Dependency: (key, study) for a signed-in researcher who may see the study; else the sign-in page or a 404."""
    found = _signed_in(request, session, study_id)
    if isinstance(found, Response):
        raise Answer(found)
    return found


def signed_form(study_id: str, request: Request, csrf: Annotated[str | None, Form()] = None,
                found=Depends(signed_in)):
    """Dependency for every POST of these pages: signed in (checked first), and the form's CSRF token matches."""
    refused = _csrf_refused(request, csrf, study_id)
    if refused:
        raise Answer(refused)
    return found


SignedIn = Annotated[tuple, Depends(signed_in)]
SignedForm = Annotated[tuple, Depends(signed_form)]


def _csrf(request: Request) -> str:
    return security.researcher_csrf(request.app.state.session_secret, request.cookies.get(security.RESEARCHER_COOKIE, ""))


def _csrf_refused(request: Request, token: str | None, study_id: str) -> Response | None:
    cookie = request.cookies.get(security.RESEARCHER_COOKIE, "")
    if security.researcher_csrf_ok(request.app.state.session_secret, cookie, token):
        return None
    return message(request, "Not changed", "The form's CSRF token is missing or does not match your session; "
                   "reload the study page and try again.", 403, link=f"/researcher/surveys/{study_id}")


@router.get("/surveys/{study_id}")
def survey_page(study_id: str, request: Request, found: SignedIn, preferences: bool = False,
                session: Session = Depends(get_db)) -> Response:
    _, study = found
    info = studies.summary(session, study, base_url=str(request.base_url), with_pairs=True, preferences=preferences)
    live = study.status in ("generating", "open")
    show_preferences = preferences or study.status == "closed"
    pilot = _machine_context(session, study, with_humans=show_preferences)
    rater_url = info["links"]["rater_url"]
    return render(request, "survey/researcher_study.html", {
        "title": study.title, "s": info, "live": live, "csrf": _csrf(request),
        "show_preferences": show_preferences,
        "prolific_url": rater_url + "?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}",
        "mturk_url": rater_url, "outcomes": exits.OUTCOMES, "machine": pilot},
        headers={"Refresh": "10"} if live else None)


def _machine_context(session: Session, study, *, with_humans: bool) -> dict:
    """The page's "machine raters: a proxy" section: the pilot's status and, once it has votes, its numbers.

    ``with_humans`` only where the page shows the human counts too (closed, or ?preferences=1).
    """
    from app.survey import machine
    from app.survey.report import machine_section

    status = machine.status(session, study)
    section = machine_section(session, study, with_humans=with_humans) if status["votes"] else None
    return {"status": status, "available": machine.has_judge(study),
            "lines": section["lines"] if section else None, "limits": section["limits"] if section else None}


@router.post("/surveys/{study_id}/machine-votes")
def survey_machine_votes(study_id: str, request: Request, found: SignedForm,
                         session: Session = Depends(get_db)) -> Response:
    from app.survey import machine
    from app.survey.schemas import MachinePilotSpec
    from worker import jobs
    from worker.celery_app import MACHINE_VOTES_TASK_NAME
    from worker.survey_models import MachineVoteJob

    key, study = found
    back = f"/researcher/surveys/{study_id}"
    try:
        job, created = machine.request(session, study, MachinePilotSpec().model_dump(), key.id)
    except machine.PilotRefused as exc:
        return message(request, "Not started", str(exc), 409, link=back, link_text="Back to the study")
    if created:
        sent = request.app.state.enqueuer.send([job.id], MACHINE_VOTES_TASK_NAME)
        jobs.mark_enqueued(session, sent, model=MachineVoteJob)
    return RedirectResponse(back, status_code=303)


@router.get("/surveys/{study_id}/close")
def survey_close_confirm(study_id: str, request: Request, found: SignedIn,
                         session: Session = Depends(get_db)) -> Response:
    _, study = found
    info = studies.summary(session, study)
    return render(request, "survey/researcher_confirm.html", {
        "title": f"Close {study.title}?", "s": info, "csrf": _csrf(request),
        "action": f"/researcher/surveys/{study.id}/close", "button": "Close the study", "danger": True,
        "question": f"Close \u201c{study.title}\u201d?",
        "lines": [f"{info['raters']} raters took part; {info['answers']} of {info['answers_wanted']} usable answers "
                  "are in.",
                  "Raters still answering will see the \u201cstudy closed\u201d page with its code, and no answer is "
                  "accepted after this.",
                  "You can reopen the study later; the reopening is recorded in its report."]})


@router.post("/surveys/{study_id}/close")
def survey_close(study_id: str, request: Request, found: SignedForm,
                 session: Session = Depends(get_db)) -> Response:
    _, study = found
    try:
        studies.close_study(session, study)
    except studies.StudyStateError as exc:
        return message(request, "Not closed", str(exc), 409, link=f"/researcher/surveys/{study_id}")
    return RedirectResponse(f"/researcher/surveys/{study_id}", status_code=303)


@router.post("/surveys/{study_id}/reopen")
def survey_reopen(study_id: str, request: Request, found: SignedForm,
                  session: Session = Depends(get_db)) -> Response:
    try:
        studies.reopen_study(session, found[1])
    except studies.StudyStateError as exc:
        return message(request, "Not reopened", str(exc), 409, link=f"/researcher/surveys/{study_id}")
    return RedirectResponse(f"/researcher/surveys/{study_id}", status_code=303)


def _int_field(value: str | None, name: str) -> int | None:
    text = (value or "").strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 7:
        raise ValueError(f"{name} must be a whole number, got {excerpt(text, 20)!r}")
    return int(text)


@router.post("/surveys/{study_id}/caps")
def survey_caps(study_id: str, request: Request, found: SignedForm,
                raters_per_pair: Annotated[str | None, Form()] = None,
                pairs_per_rater: Annotated[str | None, Form()] = None,
                timeout_minutes: Annotated[str | None, Form()] = None,
                session: Session = Depends(get_db)) -> Response:
    from app.validation import RequestInvalid

    back = f"/researcher/surveys/{study_id}"
    try:
        changes = {"raters_per_pair": _int_field(raters_per_pair, "raters per pair"),
                   "pairs_per_rater": _int_field(pairs_per_rater, "pairs per rater")}
        minutes = _int_field(timeout_minutes, "time-out")
        if minutes is not None:
            if not 1 <= minutes <= 7 * 24 * 60:
                raise ValueError("the time-out must be between 1 minute and 7 days")
            changes["assignment_timeout_seconds"] = minutes * 60
        for name in ("raters_per_pair", "pairs_per_rater"):
            if changes[name] is not None and not 1 <= changes[name] <= 100000:
                raise ValueError(f"{name.replace('_', ' ')} must be between 1 and 100000")
        studies.update_study(session, found[1], changes)
    except ValueError as exc:
        return message(request, "Not changed", str(exc), 422, link=back, link_text="Back to the study")
    except RequestInvalid as exc:
        return message(request, "Not changed", "; ".join(e["msg"] for e in exc.errors), 422, link=back,
                       link_text="Back to the study")
    except studies.StudyStateError as exc:
        return message(request, "Not changed", str(exc), 409, link=back, link_text="Back to the study")
    return RedirectResponse(back, status_code=303)


@router.get("/surveys/{study_id}/raters")
def survey_raters(study_id: str, request: Request, found: SignedIn,
                  session: Session = Depends(get_db)) -> Response:
    _, study = found
    rows = quality.rater_rows(session, study)
    return render(request, "survey/researcher_raters.html", {
        "title": f"Raters of {study.title}", "study": study, "rows": rows, "counts": quality.counts(rows),
        "flags": quality.FLAGS, "csrf": _csrf(request),
        "links": studies.links(study)})


def _rater_of(session: Session, study, rater_id: str):
    from worker.survey_models import Rater

    rater = session.get(Rater, rater_id) if studies.is_row_id(rater_id) else None
    return rater if rater is not None and rater.study_id == study.id else None


@router.post("/surveys/{study_id}/raters/{rater_id}/{action}")
def survey_rater_action(study_id: str, rater_id: str, action: str, request: Request, found: SignedForm,
                        reason: Annotated[str | None, Form()] = None,
                        session: Session = Depends(get_db)) -> Response:
    _, study = found
    rater = _rater_of(session, study, rater_id)
    back = f"/researcher/surveys/{study_id}/raters"
    if rater is None or action not in ("exclude", "include", "delete"):
        return message(request, "Not found", "No such rater or action.", 404, link=back)
    if action == "exclude":
        why = (reason or "").strip()[:200].replace("\x00", "")
        quality.exclude(session, rater, "researcher" + (f": {why}" if why else ""))
    elif action == "include":
        quality.include(session, rater)
    else:
        studies.delete_participant(session, study, rater.id)
    return RedirectResponse(back, status_code=303)


@router.get("/surveys/{study_id}/raters/{rater_id}/delete")
def survey_rater_delete_confirm(study_id: str, rater_id: str, request: Request, found: SignedIn,
                                session: Session = Depends(get_db)) -> Response:
    _, study = found
    rater = _rater_of(session, study, rater_id)
    if rater is None:
        return message(request, "Not found", "No such rater.", 404, link=f"/researcher/surveys/{study_id}/raters")
    return render(request, "survey/researcher_confirm.html", {
        "title": "Delete a participant's data?", "csrf": _csrf(request), "danger": True,
        "action": f"/researcher/surveys/{study.id}/raters/{rater.id}/delete", "button": "Delete their data",
        "question": f"Delete every record of {rater.external_id}?",
        "lines": ["Their rater row, assignments and votes are deleted from the database; this cannot be undone.",
                  "The study's report will say that a participant's data was deleted on request (without the id).",
                  "Use this for a participant who asked for their data to be removed."],
        "back": f"/researcher/surveys/{study.id}/raters"})
