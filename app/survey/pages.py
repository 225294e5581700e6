"""The rater's pages: landing (instructions, consent), one pair at a time, and a page for every way out.

Server-rendered and complete without JavaScript: each answer is an ordinary
form POST followed by a redirect to the next pair (POST/redirect/GET, so a
reload never re-sends an answer). The page's script adds keyboard answers,
waits for both images before accepting one, measures the time to answer,
guards against double submission and zooms an image on a tap.

URLs (``{sid}`` is the study id; the rater link is ``/s/{sid}``, with the
platform's ids: ``?PROLIFIC_PID=...&STUDY_ID=...&SESSION_ID=...`` on Prolific,
``?workerId=...&assignmentId=...&hitId=...&turkSubmitTo=...`` on MTurk)::

    GET  /s/{sid}                          landing, or straight back to where the rater stopped
    POST /s/{sid}/start                    consent (or "I do not consent") -> rater -> first pair
    GET  /s/{sid}/pair                     the current pair
    POST /s/{sid}/vote                     one answer -> next pair
    GET  /s/{sid}/img/{assignment}/{side}.png  the image on that side, metadata stripped
    GET  /s/{sid}/done                     the rater's exit: completion (or screen-out) code

Identity: the rater's browser id, signed with the study's secret, is held in a
cookie. Where cookies do not come back (blocked, or a third-party iframe as on
MTurk) the same signed token travels as ``rs`` in the links and forms
instead. The platform ids travel in every link too, so a participant who
loses both (another device) is found again by their platform id.

Every exit (``app.survey.exits``: declined consent, not open yet, full,
closed, closed part-way, failed checks, nothing left, completed) is a page
with its code and, where the platform takes one, a link or an MTurk submit.
"""
from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app.deps import get_db, get_settings
from app.survey import assign, exits, quality, security, studies
from app.survey.blinding import NotAPNG, strip_metadata
from app.survey.participants import Participant, ParticipantError
from app.survey.voting import VoteRefused, record_vote
from app.survey.web import csp, message, render
from worker import media
from worker.config import Settings
from worker.models import Image
from worker.survey_models import Assignment, Rater, Study, SurveyPair

router = APIRouter(include_in_schema=False)

Field = Annotated[str | None, Form()]
TOKEN = "rs"  # the signed browser id, where the cookie does not come back


class Visit:
    """One request of a rater: the study, who they are (cookie or token), and the ids the link carried."""

    def __init__(self, request: Request, session: Session, study: Study, settings: Settings):
        self.request, self.session, self.study, self.settings = request, session, study, settings
        secret = study.secret
        self.browser_id = security.read_browser_id(secret, request.cookies.get(security.RATER_COOKIE))
        self.by_token = False
        if self.browser_id is None:
            self.browser_id = security.read_browser_id(secret, request.query_params.get(TOKEN))
            self.by_token = self.browser_id is not None
        self.participant = Participant.from_params(request.query_params, settings.mturk_hosts)
        self.set_cookie_for: str | None = None

    @property
    def base(self) -> str:
        return f"/s/{self.study.id}"

    @property
    def mturk(self) -> bool:
        return self.study.platform == "mturk"

    def carry(self, participant: Participant | None = None) -> dict[str, str]:
        """The query every internal link and form of this rater carries: platform ids, and the token
        where the cookie cannot be relied on (it did not come back, or the page sits in an iframe)."""
        params = (participant or self.participant).params()
        if self.browser_id and (self.by_token or self.mturk or self.set_cookie_for):
            params[TOKEN] = security.sign_browser_id(self.study.secret, self.browser_id)
        return params

    def url(self, path: str = "", participant: Participant | None = None) -> str:
        params = self.carry(participant)
        return f"{self.base}{path}" + (f"?{urlencode(params)}" if params else "")

    def new_browser(self) -> str:
        self.browser_id = security.new_browser_id()
        self.set_cookie_for = self.browser_id
        return self.browser_id

    def policy(self, submit_to: str | None = None) -> str:
        framing = tuple(self.settings.mturk_hosts) if self.mturk else ()
        return csp(frame_ancestors=framing, form_action=(submit_to,) if submit_to else ())

    def finish(self, response: Response) -> Response:
        if self.set_cookie_for:
            response.set_cookie(security.RATER_COOKIE, security.sign_browser_id(self.study.secret, self.set_cookie_for),
                                max_age=90 * 24 * 3600, path=self.base, httponly=True, samesite="lax",
                                secure=self.request.url.scheme == "https")
        return response

    def redirect(self, path: str, participant: Participant | None = None) -> Response:
        return self.finish(RedirectResponse(self.url(path, participant), status_code=303))

    def page(self, name: str, context: dict, status_code: int = 200, headers: dict | None = None,
             submit_to: str | None = None) -> Response:
        return self.finish(render(self.request, name, context, status_code=status_code, headers=headers,
                                  policy=self.policy(submit_to)))

    def text(self, title: str, text: str, status_code: int = 200, link: str | None = None,
             link_text: str | None = None) -> Response:
        return self.finish(message(self.request, title, text, status_code, link=link, link_text=link_text,
                                   policy=self.policy()))

    def rater(self) -> Rater | None:
        return assign.rater_by_browser(self.session, self.study, self.browser_id)


def _visit(request: Request, session: Session, settings: Settings, study_id: str) -> Visit | Response:
    study = studies.get_study(session, study_id)
    if study is None:
        return message(request, "Study not found", "There is no study at this address. Please check the link you "
                       "were given.", 404)
    study = studies.refresh(session, study)
    try:
        return Visit(request, session, study, settings)
    except ParticipantError as exc:
        return message(request, "Invalid link", str(exc), 400)


def _exit(visit: Visit, outcome: str, *, rater: Rater | None = None, status_code: int = 200,
          answered: int | None = None, link: str | None = None, link_text: str | None = None,
          headers: dict | None = None) -> Response:
    """The page of one way out: its text, its code, the way back to the platform."""
    study = visit.study
    info = exits.OUTCOMES[outcome]
    code = exits.exit_for(study, outcome)
    participant = Participant.from_rater(rater) if rater is not None else visit.participant
    if answered is None:
        answered = assign.answered_count(visit.session, rater) if rater is not None else 0
    submit = participant.mturk_submit_url
    return visit.page("survey/exit.html", {
        "title": info.title, "study": study, "outcome": outcome, "text": info.text.format(answered=answered),
        "code": code["code"], "url": code["url"], "platform": participant.platform_name, "answered": answered,
        "mturk_submit": submit, "assignment_id": participant.platform_session_id,
        "redirect": code["url"] if (study.completion_redirect and code["url"] and not submit) else None,
        "link": link, "link_text": link_text}, status_code=status_code, headers=headers,
        submit_to=participant.submit_to if submit else None)


def _unavailable(visit: Visit, rater: Rater | None = None) -> Response | None:
    """The exit for a study that is not open: not yet, closed (before or part-way), or failed."""
    study = visit.study
    if study.status == "generating":
        return _exit(visit, "not_open", status_code=503, link=visit.url(), link_text="Try again",
                     headers={"Retry-After": "30"})
    if study.status in ("closed", "failed"):
        started = rater is not None and assign.answered_count(visit.session, rater) > 0
        return _exit(visit, "closed_midway" if started else "closed", rater=rater, status_code=410)
    return None


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _refuse(visit: Visit, status: int, text: str) -> Response:
    if _wants_json(visit.request):
        from app.errors import problem

        return problem(status, text)
    return visit.text("Answer not recorded", text, status, link=visit.url("/pair"), link_text="Back to the survey")


# -- landing and consent --------------------------------------------------------------------

def _landing(visit: Visit, error: str | None = None, status: int = 200) -> Response:
    study = visit.study
    n_pairs = min(study.pairs_per_rater, sum(1 for p in study.pairs if not p.is_attention_check))
    total = n_pairs + study.attention_checks
    return visit.page("survey/landing.html", {
        "title": study.title, "study": study, "csrf": security.csrf_token(study.secret, visit.browser_id),
        "participant": visit.participant, "total": total, "minutes": max(1, round(total * 6 / 60)),
        "error": error, "action": visit.url("/start")}, status_code=status)


@router.get("/s/{study_id}")
def landing(study_id: str, request: Request, session: Session = Depends(get_db),
            settings: Settings = Depends(get_settings)) -> Response:
    visit = _visit(request, session, settings, study_id)
    if isinstance(visit, Response):
        return visit
    participant = visit.participant
    known = visit.rater()
    if known is not None and participant.external_id not in (None, known.external_id):
        known = None  # another participant on a browser that took part before (a shared computer)
    rater = assign.rater_by_participant(session, visit.study, participant) if participant.pid else known
    if rater is not None and rater.completed_at is not None:
        return visit.redirect("/done", Participant.from_rater(rater) if participant.pid is None else None)
    unavailable = _unavailable(visit, rater)
    if unavailable:
        return unavailable
    if rater is not None:
        # A returning rater: back to where they stopped (on this browser from now on).
        if rater.browser_id != visit.browser_id:
            assign.rebind(session, rater, visit.new_browser())
        return visit.redirect("/pair", Participant.from_rater(rater))
    if visit.browser_id is None or known is None and visit.rater() is not None:
        visit.new_browser()
    if not assign.has_room(session, visit.study):
        return _exit(visit, "full")
    return _landing(visit)


@router.post("/s/{study_id}/start")
def start(study_id: str, request: Request, csrf: Field = None, consent: Field = None, PROLIFIC_PID: Field = None,
          STUDY_ID: Field = None, SESSION_ID: Field = None, session: Session = Depends(get_db),
          settings: Settings = Depends(get_settings)) -> Response:
    visit = _visit(request, session, settings, study_id)
    if isinstance(visit, Response):
        return visit
    if PROLIFIC_PID and not visit.participant.pid:
        # The ids as form fields (older pages, scripts) rather than in the action's query.
        try:
            visit.participant = Participant.from_params(
                {"PROLIFIC_PID": PROLIFIC_PID, "STUDY_ID": STUDY_ID, "SESSION_ID": SESSION_ID})
        except ParticipantError as exc:
            return visit.text("Invalid link", str(exc), 400)
    problem = security.csrf_problem(visit.study.secret, visit.browser_id, csrf)
    if problem:
        return visit.text("Please start again", problem, 403, link=visit.url(), link_text="Start again")
    answer = (consent or "").strip().lower()
    if answer in ("no", "decline", "0", "false"):
        return _exit(visit, "no_consent")  # nothing is stored about someone who did not consent
    unavailable = _unavailable(visit)
    if unavailable:
        return unavailable
    if visit.participant.preview:
        return _landing(visit, error="Please accept the HIT first; then the study starts here.", status=409)
    if answer not in ("yes", "on", "1", "true"):
        return _landing(visit, error="Please tick the consent box to take part, or choose \u201cI do not "
                                     "consent\u201d.", status=422)
    participant = visit.participant
    existing = (assign.rater_by_participant(session, visit.study, participant) if participant.pid
                else visit.rater())
    if existing is None and not assign.has_room(session, visit.study):
        return _exit(visit, "full")
    holder = visit.rater()
    if holder is not None and (existing is None or holder.id != existing.id):
        # Another participant already took part in this browser (a shared computer):
        # this one gets a browser id of their own.
        visit.new_browser()
    rater = assign.start_rater(session, visit.study, visit.browser_id, participant, request.headers.get("user-agent"))
    if rater.browser_id != visit.browser_id:
        visit.browser_id = rater.browser_id
    if not visit.by_token and (visit.set_cookie_for or _cookie_id(request, visit.study) != rater.browser_id):
        visit.set_cookie_for = rater.browser_id
    return visit.redirect("/pair", Participant.from_rater(rater))


def _cookie_id(request: Request, study: Study) -> str | None:
    return security.read_browser_id(study.secret, request.cookies.get(security.RATER_COOKIE))


# -- pairs ---------------------------------------------------------------------------------------

def _end(visit: Visit, rater: Rater) -> Response:
    """The rater's session is over: record how, then show its exit."""
    if rater.completed_at is None:
        # A rater the researcher excluded part-way also ends here, with the code their answers earn;
        # the researcher decides on the platform (the per-rater table shows why they were excluded).
        real = assign.answered_count(visit.session, rater, real_only=True)
        outcome = ("failed_checks" if rater.exclusion_reason == quality.FAILED_CHECKS
                   else "completed" if real else "no_pairs")
        assign.mark_completed(visit.session, rater, outcome)
        if outcome == "completed":
            quality.on_finish(visit.session, visit.study, rater)
    return visit.redirect("/done", Participant.from_rater(rater))


@router.get("/s/{study_id}/pair")
def pair_page(study_id: str, request: Request, session: Session = Depends(get_db),
              settings: Settings = Depends(get_settings)) -> Response:
    visit = _visit(request, session, settings, study_id)
    if isinstance(visit, Response):
        return visit
    study = visit.study
    rater = visit.rater()
    if rater is None:
        return visit.redirect("")  # the landing finds them by their platform id, or starts them
    if rater.completed_at is not None or rater.excluded_at is not None:
        # Finished raters keep seeing their code, even after the study closed.
        return _end(visit, rater)
    unavailable = _unavailable(visit, rater)
    if unavailable:
        return unavailable
    current = assign.current_assignment(session, study, rater)
    if current is None:
        return _end(visit, rater)
    pair = session.get(SurveyPair, current.pair_id)
    answered = assign.answered_count(session, rater)
    image = session.get(Image, pair.image_a_id)
    planned = max(rater.planned, current.position)
    return visit.page("survey/pair.html", {
        "title": study.title, "study": study, "pair": pair, "assignment": current,
        "csrf": security.csrf_token(study.secret, rater.browser_id), "action": visit.url("/vote"),
        "left_src": visit.url(f"/img/{current.id}/left.png"), "right_src": visit.url(f"/img/{current.id}/right.png"),
        "instruction": pair.check_answer if pair.is_attention_check and pair.check_kind == "instructed" else None,
        "width": image.width if image else 256, "height": image.height if image else 256,
        "answered": answered, "planned": planned, "percent": round(100 * answered / planned) if planned else 100})


@router.post("/s/{study_id}/vote")
def vote(study_id: str, request: Request, csrf: Field = None, pair: Field = None, answer: Field = None,
         loaded: Field = None, load_ms: Field = None, client_ms: Field = None, input: Field = None,
         session: Session = Depends(get_db), settings: Settings = Depends(get_settings)) -> Response:
    visit = _visit(request, session, settings, study_id)
    if isinstance(visit, Response):
        return visit
    problem = security.csrf_problem(visit.study.secret, visit.browser_id, csrf)
    if problem:
        return _refuse(visit, 403, problem)
    rater = visit.rater()
    if rater is None:
        return _refuse(visit, 403, "you have not started this study in this browser; open the study link to begin")
    try:
        record_vote(session, visit.study, rater, pair_id=pair, answer=answer, loaded=loaded, load_ms=load_ms,
                    client_ms=client_ms, input_kind=input)
    except VoteRefused as exc:
        return _refuse(visit, exc.status, exc.message)
    if _wants_json(request):
        return JSONResponse({"recorded": True, "next": visit.url("/pair")})
    return visit.redirect("/pair", Participant.from_rater(rater))


@router.get("/s/{study_id}/img/{assignment_id}/{side}.png")
def image(study_id: str, assignment_id: str, side: str, request: Request, session: Session = Depends(get_db),
          settings: Settings = Depends(get_settings)) -> Response:
    study = studies.get_study(session, study_id)
    if study is None or side not in ("left", "right"):
        return Response(status_code=404)
    browser_id = _cookie_id(request, study) or security.read_browser_id(study.secret,
                                                                        request.query_params.get(TOKEN))
    rater = assign.rater_by_browser(session, study, browser_id)
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
def done(study_id: str, request: Request, session: Session = Depends(get_db),
         settings: Settings = Depends(get_settings)) -> Response:
    visit = _visit(request, session, settings, study_id)
    if isinstance(visit, Response):
        return visit
    rater = visit.rater()
    if rater is None and visit.participant.pid:
        rater = assign.rater_by_participant(session, visit.study, visit.participant)
        if rater is not None and rater.completed_at is not None:
            assign.rebind(session, rater, visit.new_browser())
    if rater is None:
        return visit.redirect("")
    if rater.completed_at is None:
        return visit.redirect("/pair", Participant.from_rater(rater))
    return _exit(visit, rater.outcome or "completed", rater=rater)
