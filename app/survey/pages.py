"""The rater's pages: landing (instructions, consent), one pair at a time, thank-you.

Server-rendered and complete without JavaScript: each answer is an ordinary
form POST followed by a redirect to the next pair (POST/redirect/GET, so a
reload never re-sends an answer). The page's script adds keyboard answers,
waits for both images before accepting one, measures the time to answer
and guards against double submission.

URLs (``{sid}`` is the study id; the rater link is ``/s/{sid}``, optionally
with ``?PROLIFIC_PID=...&STUDY_ID=...&SESSION_ID=...``)::

    GET  /s/{sid}                          landing, or straight back to where the rater stopped
    POST /s/{sid}/start                    consent -> rater -> first pair
    GET  /s/{sid}/pair                     the current pair
    POST /s/{sid}/vote                     one answer -> next pair
    GET  /s/{sid}/img/{assignment}/{side}.png  the image on that side, metadata stripped
    GET  /s/{sid}/done                     completion code
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from app.deps import get_db, get_settings
from app.survey import assign, security, studies
from app.survey.blinding import NotAPNG, strip_metadata
from app.survey.voting import VoteRefused, record_vote
from app.survey.web import message, render
from worker import media
from worker.config import Settings
from worker.models import Image
from worker.survey_models import Assignment, Rater, Study, SurveyPair

router = APIRouter(include_in_schema=False)

Field = Annotated[str | None, Form()]


def _base(study: Study) -> str:
    return f"/s/{study.id}"


def _set_cookie(response: Response, request: Request, study: Study, browser_id: str) -> None:
    response.set_cookie(security.RATER_COOKIE, security.sign_browser_id(study.secret, browser_id),
                        max_age=90 * 24 * 3600, path=_base(study), httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")


def _browser_id(request: Request, study: Study) -> str | None:
    return security.read_browser_id(study.secret, request.cookies.get(security.RATER_COOKIE))


def _study_or_page(request: Request, session: Session, study_id: str) -> Study | Response:
    study = studies.get_study(session, study_id)
    if study is None:
        return message(request, "Study not found", "There is no study at this address. Please check the link you "
                       "were given.", 404)
    return studies.refresh(session, study)


def _unavailable(request: Request, study: Study) -> Response | None:
    if study.status == "generating":
        return message(request, "Not open yet", "This study is being prepared. Please try again in a few "
                       "minutes.", 503, link=_base(study), link_text="Try again", headers={"Retry-After": "30"})
    if study.status == "closed":
        return message(request, "Study closed", "This study is closed and accepts no more answers. Thank you "
                       "for your interest.", 410)
    if study.status == "failed":
        return message(request, "Study unavailable", "This study could not be prepared and is not available.",
                       410)
    return None


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _refuse(request: Request, study: Study, status: int, text: str) -> Response:
    if _wants_json(request):
        from app.errors import problem

        return problem(status, text)
    return message(request, "Answer not recorded", text, status, link=f"{_base(study)}/pair",
                   link_text="Back to the survey")


# -- landing and consent --------------------------------------------------------------------

def _landing(request: Request, session: Session, study: Study, browser_id: str, participant: assign.Participant,
             error: str | None = None, status: int = 200) -> Response:
    n_pairs = min(study.pairs_per_rater, sum(1 for p in study.pairs if not p.is_attention_check))
    total = n_pairs + study.attention_checks
    return render(request, "survey/landing.html", {
        "title": study.title, "study": study, "csrf": security.csrf_token(study.secret, browser_id),
        "participant": participant, "total": total, "minutes": max(1, round(total * 6 / 60)), "error": error,
        "action": f"{_base(study)}/start"}, status_code=status)


@router.get("/s/{study_id}")
def landing(study_id: str, request: Request, PROLIFIC_PID: str | None = None, STUDY_ID: str | None = None,
            SESSION_ID: str | None = None, session: Session = Depends(get_db)) -> Response:
    study = _study_or_page(request, session, study_id)
    if isinstance(study, Response):
        return study
    try:
        participant = assign.Participant.from_params(PROLIFIC_PID, STUDY_ID, SESSION_ID)
    except assign.ParticipantError as exc:
        return message(request, "Invalid link", str(exc), 400)
    browser_id = _browser_id(request, study)
    known = assign.rater_by_browser(session, study, browser_id)
    if known is not None and known.completed_at is not None and (
            participant.pid is None or known.external_id == f"prolific:{participant.pid}"):
        return RedirectResponse(f"{_base(study)}/done", status_code=303)
    unavailable = _unavailable(request, study)
    if unavailable:
        return unavailable
    fresh = browser_id is None
    if fresh:
        browser_id = security.new_browser_id()
    rater = (assign.rater_by_participant(session, study, participant.pid) if participant.pid
             else assign.rater_by_browser(session, study, browser_id))
    if rater is not None:
        # A returning rater: back to where they stopped (on this browser from now on).
        if rater.browser_id != browser_id:
            browser_id = security.new_browser_id()
            assign.rebind(session, rater, browser_id)
            fresh = True
        response: Response = RedirectResponse(f"{_base(study)}/pair", status_code=303)
    elif not assign.has_room(session, study):
        response = message(request, "Study full", "This study already has all the answers it needs. Thank you "
                           "for your interest.", 200)
    else:
        response = _landing(request, session, study, browser_id, participant)
    if fresh:
        _set_cookie(response, request, study, browser_id)
    return response


@router.post("/s/{study_id}/start")
def start(study_id: str, request: Request, csrf: Field = None, consent: Field = None, PROLIFIC_PID: Field = None,
          STUDY_ID: Field = None, SESSION_ID: Field = None, session: Session = Depends(get_db)) -> Response:
    study = _study_or_page(request, session, study_id)
    if isinstance(study, Response):
        return study
    browser_id = _browser_id(request, study)
    problem = security.csrf_problem(study.secret, browser_id, csrf)
    if problem:
        return message(request, "Please start again", problem, 403, link=_base(study), link_text="Start again")
    unavailable = _unavailable(request, study)
    if unavailable:
        return unavailable
    try:
        participant = assign.Participant.from_params(PROLIFIC_PID, STUDY_ID, SESSION_ID)
    except assign.ParticipantError as exc:
        return message(request, "Invalid link", str(exc), 400)
    if (consent or "").strip().lower() not in ("yes", "on", "1", "true"):
        return _landing(request, session, study, browser_id, participant,
                        error="Please tick the consent box to take part.", status=422)
    existing = (assign.rater_by_participant(session, study, participant.pid) if participant.pid
                else assign.rater_by_browser(session, study, browser_id))
    if existing is None and not assign.has_room(session, study):
        return message(request, "Study full", "This study already has all the answers it needs. Thank you for "
                       "your interest.", 200)
    fresh = False
    holder = assign.rater_by_browser(session, study, browser_id)
    if holder is not None and (existing is None or holder.id != existing.id):
        # Another participant already took part in this browser (a shared computer):
        # this one gets a browser id of their own.
        browser_id, fresh = security.new_browser_id(), True
    rater = assign.start_rater(session, study, browser_id, participant, request.headers.get("user-agent"))
    response = RedirectResponse(f"{_base(study)}/pair", status_code=303)
    if fresh or rater.browser_id != _browser_id(request, study):
        _set_cookie(response, request, study, rater.browser_id)
    return response


# -- pairs ---------------------------------------------------------------------------------------

def _rater_or_redirect(request: Request, session: Session, study: Study) -> Rater | Response:
    rater = assign.rater_by_browser(session, study, _browser_id(request, study))
    if rater is None:
        return RedirectResponse(_base(study), status_code=303)
    return rater


@router.get("/s/{study_id}/pair")
def pair_page(study_id: str, request: Request, session: Session = Depends(get_db)) -> Response:
    study = _study_or_page(request, session, study_id)
    if isinstance(study, Response):
        return study
    rater = _rater_or_redirect(request, session, study)
    if isinstance(rater, Response):
        return rater
    if rater.completed_at is not None:
        # Finished raters keep seeing their code, even after the study closed.
        return RedirectResponse(f"{_base(study)}/done", status_code=303)
    if study.status == "closed":
        answered = assign.answered_count(session, rater)
        return message(request, "Study closed", f"This study has closed. Your {answered} answer"
                       f"{'' if answered == 1 else 's'} were recorded. Thank you for taking part.", 410)
    unavailable = _unavailable(request, study)
    if unavailable:
        return unavailable
    current = assign.current_assignment(session, study, rater)
    if current is None:
        assign.mark_completed(session, rater)
        return RedirectResponse(f"{_base(study)}/done", status_code=303)
    pair = session.get(SurveyPair, current.pair_id)
    answered = assign.answered_count(session, rater)
    image = session.get(Image, pair.image_a_id)
    planned = max(rater.planned, current.position)
    browser_id = rater.browser_id
    return render(request, "survey/pair.html", {
        "title": study.title, "study": study, "pair": pair, "assignment": current,
        "csrf": security.csrf_token(study.secret, browser_id), "action": f"{_base(study)}/vote",
        "left_src": f"{_base(study)}/img/{current.id}/left.png",
        "right_src": f"{_base(study)}/img/{current.id}/right.png",
        "width": image.width if image else 256, "height": image.height if image else 256,
        "answered": answered, "planned": planned, "percent": round(100 * answered / planned) if planned else 100})


@router.post("/s/{study_id}/vote")
def vote(study_id: str, request: Request, csrf: Field = None, pair: Field = None, answer: Field = None,
         loaded: Field = None, load_ms: Field = None, client_ms: Field = None, input: Field = None,
         session: Session = Depends(get_db)) -> Response:
    study = _study_or_page(request, session, study_id)
    if isinstance(study, Response):
        return study
    browser_id = _browser_id(request, study)
    problem = security.csrf_problem(study.secret, browser_id, csrf)
    if problem:
        return _refuse(request, study, 403, problem)
    rater = assign.rater_by_browser(session, study, browser_id)
    if rater is None:
        return _refuse(request, study, 403, "you have not started this study in this browser; open the study "
                                            "link to begin")
    try:
        record_vote(session, study, rater, pair_id=pair, answer=answer, loaded=loaded, load_ms=load_ms,
                    client_ms=client_ms, input_kind=input)
    except VoteRefused as exc:
        return _refuse(request, study, exc.status, exc.message)
    if _wants_json(request):
        from fastapi.responses import JSONResponse

        return JSONResponse({"recorded": True, "next": f"{_base(study)}/pair"})
    return RedirectResponse(f"{_base(study)}/pair", status_code=303)


@router.get("/s/{study_id}/img/{assignment_id}/{side}.png")
def image(study_id: str, assignment_id: str, side: str, request: Request, session: Session = Depends(get_db),
          settings: Settings = Depends(get_settings)) -> Response:
    study = studies.get_study(session, study_id)
    if study is None or side not in ("left", "right"):
        return Response(status_code=404)
    rater = assign.rater_by_browser(session, study, _browser_id(request, study))
    current = session.get(Assignment, assignment_id) if studies.is_row_id(assignment_id) else None
    # Only the rater it was assigned to can see it: images stay out of reach of link sharing.
    if rater is None or current is None or current.rater_id != rater.id or current.study_id != study.id:
        return Response(status_code=404)
    pair = session.get(SurveyPair, current.pair_id)
    image_id = pair.image_a_id if (side == current.a_side) else pair.image_b_id
    row = session.get(Image, image_id) if image_id else None
    if row is None:
        return Response(status_code=404)
    try:
        data = strip_metadata(media.resolve(settings.media_dir, row.path).read_bytes())
    except (OSError, ValueError, NotAPNG):
        return Response(status_code=404)
    return Response(data, media_type="image/png",
                    headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"})


@router.get("/s/{study_id}/done")
def done(study_id: str, request: Request, session: Session = Depends(get_db)) -> Response:
    study = _study_or_page(request, session, study_id)
    if isinstance(study, Response):
        return study
    rater = _rater_or_redirect(request, session, study)
    if isinstance(rater, Response):
        return rater
    if rater.completed_at is None:
        return RedirectResponse(f"{_base(study)}/pair", status_code=303)
    return render(request, "survey/done.html", {
        "title": study.title, "study": study, "code": study.completion_code, "url": study.completion_url,
        "answered": assign.answered_count(session, rater)})
