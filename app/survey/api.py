"""/v1/surveys: create a study (researcher key), follow it, close it, export it.

A study is long work like a generation: ``POST`` answers 202 with the study
resource and a ``Location``; its ``status`` goes ``generating`` -> ``open``
(when every image exists; the manifest is frozen then) -> ``closed``.
Give raters ``links.rater_url``.
"""
from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from sqlalchemy.orm import Session

from app.auth import rate_limited_api_key, require_api_key
from app.deps import get_db, get_settings
from app.errors import excerpt, problem_responses
from app.keys import ApiKey
from app.survey import access, export, quality, studies
from app.survey.researcher_auth import researcher
from app.survey.schemas import (MachinePilotSpec, MachineVotesOut, RaterExclusion, StudyCreate, StudyList, StudyOut,
                                StudyUpdate)
from app.survey.web import REPORT_HEADERS
from app.validation import RequestInvalid
from worker import jobs
from worker.config import Settings
from worker.survey_models import Study

router = APIRouter(prefix="/v1/surveys", tags=["surveys"])


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _study(session: Session, study_id: str, key: ApiKey) -> Study:
    """The study, if this key may see it; otherwise a 404, as if it did not exist."""
    study = studies.get_study(session, study_id)
    if study is None or not access.can_see(session, key, study):
        raise HTTPException(404, f"no survey with id {excerpt(study_id, 40)!r}")
    return studies.refresh(session, study)


@router.post("", status_code=202, response_model=StudyOut, summary="Create a study",
             description="Validates everything, stores the study and its pairs, and queues the seed-matched "
                         "pairs as generation jobs. The study opens by itself when they have all succeeded; "
                         "follow `Location` (`generation.progress`) until `status` is `open`.",
             responses={202: {"headers": {"Location": {"schema": {"type": "string"}}}},
                        **problem_responses(400, 401, 429)})
def create_survey(body: StudyCreate, request: Request, response: Response,
                  key: ApiKey = Depends(rate_limited_api_key), session: Session = Depends(get_db),
                  settings: Settings = Depends(get_settings)) -> dict:
    try:
        study = studies.create_study(session, body, settings, owner_key_id=key.id)
    except RequestInvalid as exc:
        raise RequestValidationError(exc.errors) from None
    sent = request.app.state.enqueuer.send(list(study.job_ids))
    jobs.mark_enqueued(session, sent)
    response.headers["Location"] = f"/v1/surveys/{study.id}"
    return studies.summary(session, study, base_url=_base_url(request))


@router.get("", response_model=StudyList, summary="List studies, newest first", responses=problem_responses(401))
def list_surveys(request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 100,
                 key: ApiKey = Depends(researcher), session: Session = Depends(get_db)) -> dict:
    items = [studies.summary(session, studies.refresh(session, s), base_url=_base_url(request))
             for s in studies.list_studies(session, key, limit)]
    return {"items": items}


@router.get("/{study_id}", response_model=StudyOut, summary="A study's live status, with per-pair counts",
            responses=problem_responses(401, 404))
def get_survey(study_id: str, request: Request,
               preferences: Annotated[bool, Query(description="per-pair preference counts while the study "
                                                              "collects (hidden by default)")] = False,
               key: ApiKey = Depends(researcher), session: Session = Depends(get_db)) -> dict:
    study = _study(session, study_id, key)
    _send_machine_jobs(request, session, study)
    return studies.summary(session, study, base_url=_base_url(request), with_pairs=True, preferences=preferences)


def _send_machine_jobs(request: Request, session: Session, study: Study) -> None:
    # A pilot asked for at creation is queued by the study's opening, which has no broker at hand;
    # the reaper sends it too, this only saves its interval.
    from app.survey import machine
    from worker.celery_app import MACHINE_VOTES_TASK_NAME
    from worker.survey_models import MachineVoteJob

    waiting = machine.unsent(session, study)
    if waiting:
        sent = request.app.state.enqueuer.send(waiting, MACHINE_VOTES_TASK_NAME)
        jobs.mark_enqueued(session, sent, model=MachineVoteJob)


@router.patch("/{study_id}", response_model=StudyOut, summary="Raise a study's caps or change its time-out",
              description="`raters_per_pair` and `pairs_per_rater` can only be raised. The frozen manifest is not "
                          "touched; each change is logged in `amendments` (and in the report).",
              responses=problem_responses(401, 404, 409))
def update_survey(study_id: str, body: StudyUpdate, request: Request, key: ApiKey = Depends(require_api_key),
                  session: Session = Depends(get_db)) -> dict:
    study = _study(session, study_id, key)
    try:
        studies.update_study(session, study, body.model_dump(exclude_none=True))
    except RequestInvalid as exc:
        raise RequestValidationError(exc.errors) from None
    except studies.StudyStateError as exc:
        raise HTTPException(409, str(exc)) from None
    return studies.summary(session, study, base_url=_base_url(request), with_pairs=True)


@router.post("/{study_id}/reopen", response_model=StudyOut, summary="Reopen a closed study",
             description="Raters who were part-way continue where they stopped. Logged in `amendments`.",
             responses=problem_responses(401, 404, 409))
def reopen_survey(study_id: str, request: Request, key: ApiKey = Depends(require_api_key),
                  session: Session = Depends(get_db)) -> dict:
    study = _study(session, study_id, key)
    try:
        studies.reopen_study(session, study)
    except studies.StudyStateError as exc:
        raise HTTPException(409, str(exc)) from None
    return studies.summary(session, study, base_url=_base_url(request), with_pairs=True)


@router.get("/{study_id}/raters", summary="Every rater with status, timings, checks, flags: for platform approvals",
            description="`format=csv` (default) or `json`: one row per rater: session ids on the platform, "
                        "start, finish and duration, answers, attention checks failed, share of Same, side "
                        "answers, fast answers, flags, status (in_progress, completed, abandoned, closed_midway, "
                        "excluded, no_pairs), the exit code they were given, and every stored field.",
            responses={200: {"content": {"text/csv": {}, "application/json": {}}}, **problem_responses(401, 404)})
def raters(study_id: str, format: Literal["csv", "json"] = "csv", key: ApiKey = Depends(researcher),
           session: Session = Depends(get_db)) -> Response:
    study = _study(session, study_id, key)
    rows = quality.rater_rows(session, study)
    if format == "json":
        return JSONResponse(jsonable_encoder({"study_id": study.id, "counts": quality.counts(rows), "raters": rows}))
    return PlainTextResponse(export.rater_csv(rows), media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="survey-{study.id}-raters.csv"'})


def _rater(session: Session, study, rater_id: str):
    from worker.survey_models import Rater

    rater = session.get(Rater, rater_id) if studies.is_row_id(rater_id) else None
    if rater is None or rater.study_id != study.id:
        raise HTTPException(404, f"study {study.id} has no rater {excerpt(rater_id, 40)!r}")
    return rater


@router.post("/{study_id}/raters/{rater_id}/exclude", summary="Exclude a rater from the statistics",
             description="Their votes stay stored but leave the statistics and the completion counts; their slots "
                         "go back to the pool so other raters can take the pairs.",
             responses=problem_responses(401, 404))
def exclude_rater(study_id: str, rater_id: str, body: RaterExclusion | None = None,
                  key: ApiKey = Depends(require_api_key), session: Session = Depends(get_db)) -> dict:
    study = _study(session, study_id, key)
    rater = _rater(session, study, rater_id)
    reason = "researcher" + (f": {body.reason}" if body and body.reason else "")
    changed = quality.exclude(session, rater, reason)
    return {"rater_id": rater.id, "excluded": True, "changed": changed, "reason": rater.exclusion_reason}


@router.post("/{study_id}/raters/{rater_id}/include", summary="Include an excluded rater again",
             responses=problem_responses(401, 404))
def include_rater(study_id: str, rater_id: str, key: ApiKey = Depends(require_api_key),
                  session: Session = Depends(get_db)) -> dict:
    study = _study(session, study_id, key)
    rater = _rater(session, study, rater_id)
    changed = quality.include(session, rater)
    return {"rater_id": rater.id, "excluded": False, "changed": changed, "reason": None}


@router.delete("/{study_id}/participants/{participant}", status_code=204,
               summary="Delete one participant's data (a deletion request)",
               description="`participant`: the platform id (a Prolific ID or MTurk worker id, with or without its "
                           "`prolific:` / `mturk:` prefix) or the rater id. Deletes the rater, their assignments and "
                           "votes; the study's amendments log that a deletion happened (without the id).",
               responses=problem_responses(401, 404))
def delete_participant(study_id: str, participant: str, key: ApiKey = Depends(require_api_key),
                       session: Session = Depends(get_db)) -> Response:
    study = _study(session, study_id, key)
    if len(participant) > 255 or not studies.delete_participant(session, study, participant):
        raise HTTPException(404, f"study {study.id} has no participant {excerpt(participant, 40)!r}")
    return Response(status_code=204)


@router.post("/{study_id}/close", response_model=StudyOut, summary="Close a study: no more answers",
             responses=problem_responses(401, 404, 409))
def close_survey(study_id: str, request: Request, key: ApiKey = Depends(require_api_key),
                 session: Session = Depends(get_db)) -> dict:
    study = _study(session, study_id, key)
    try:
        studies.close_study(session, study)
    except studies.StudyStateError as exc:
        raise HTTPException(409, str(exc)) from None
    return studies.summary(session, study, base_url=_base_url(request), with_pairs=True)


@router.get("/{study_id}/manifest", summary="The frozen manifest: every pair's label, seed, image hashes, "
                                            "settings, code version",
            responses={200: {"content": {"application/json": {}}}, **problem_responses(401, 404, 409)})
def manifest(study_id: str, key: ApiKey = Depends(researcher), session: Session = Depends(get_db)) -> Response:
    study = _study(session, study_id, key)
    if study.manifest is None:
        raise HTTPException(409, f"study {study_id} is {study.status}: its manifest is frozen when it opens")
    body = json.dumps(study.manifest, indent=2, ensure_ascii=False) + "\n"
    return Response(body, media_type="application/json", headers={
        "X-Manifest-SHA256": study.manifest_sha256,
        "Content-Disposition": f'attachment; filename="survey-{study.id}-manifest.json"'})


@router.get("/{study_id}/votes", summary="Every vote with everything recorded",
            description="`format=csv` (default): one row per vote, all columns. `format=json`: the same rows. "
                        "`format=tidy`: the statistics' tidy CSV (`rguide stats` reads it), with exclusions "
                        "applied by the study's attention-check rule.",
            responses={200: {"content": {"text/csv": {}, "application/json": {}}}, **problem_responses(401, 404)})
def votes(study_id: str, format: Literal["csv", "json", "tidy"] = "csv", key: ApiKey = Depends(researcher),
          session: Session = Depends(get_db)) -> Response:
    study = _study(session, study_id, key)
    name = f"survey-{study.id}-votes"
    if format == "tidy":
        return PlainTextResponse(export.tidy_csv(session, study), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{name}-tidy.csv"'})
    rows = export.vote_rows(session, study)
    if format == "json":
        return JSONResponse({"study_id": study.id, "manifest_sha256": study.manifest_sha256, "votes": rows})
    return PlainTextResponse(export.rows_csv(rows, multi_arm=study.arms is not None), media_type="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


def _results(session: Session, study: Study, n_boot: int, seed: int) -> dict:
    try:
        return export.results(session, study, n_boot=n_boot, seed=seed)
    except ValueError as exc:
        raise HTTPException(409, f"no statistics for study {study.id} yet: {exc}") from None


NBoot = Annotated[int, Query(ge=0, le=20000, description="bootstrap resamples (0: no bootstrap)")]
Seed = Annotated[int, Query(ge=0, le=2**32 - 1, description="bootstrap seed")]


@router.get("/{study_id}/results", summary="Preference statistics (app.stats.compute_all) of the study's votes",
            responses=problem_responses(401, 404, 409))
def results(study_id: str, n_boot: NBoot = 2000, seed: Seed = 0, key: ApiKey = Depends(researcher),
            session: Session = Depends(get_db)) -> JSONResponse:
    study = _study(session, study_id, key)
    return JSONResponse(_results(session, study, n_boot, seed))


@router.get("/{study_id}/report", response_class=HTMLResponse, summary="The statistics as an HTML report",
            description="One self-contained page for a paper: the study's ids, manifest hash, settings, dates, "
                        "raters recruited / excluded / analysed, a methods paragraph, the statistics with "
                        "intervals, and the pair images embedded as data URLs (a saved copy is whole). "
                        "Marked provisional while the study is not closed.",
            responses=problem_responses(401, 404, 409))
def report(study_id: str, n_boot: NBoot = 2000, seed: Seed = 0, key: ApiKey = Depends(researcher),
           session: Session = Depends(get_db), settings: Settings = Depends(get_settings)) -> HTMLResponse:
    from app.stats.report import render_report
    from app.survey.report import embedded_images, study_header

    study = _study(session, study_id, key)
    stats = _results(session, study, n_boot, seed)
    if study.arms is not None:
        from app.stats.arms_report import render_arms_report

        html = render_arms_report(stats, title=study.title, study=study_header(session, study, stats))
        return HTMLResponse(html, headers={**REPORT_HEADERS, "Content-Disposition": (
            f'inline; filename="survey-{study.id}-report.html"')})
    shown = {str(p) for p in stats["most_preferred"] + stats["least_preferred"]}
    images = embedded_images(session, study, settings, shown)
    html = render_report(stats, title=study.title, images=images, study=study_header(session, study, stats))
    return HTMLResponse(html, headers={**REPORT_HEADERS, "Content-Disposition": (
        f'inline; filename="survey-{study.id}-report.html"')})


@router.get("/{study_id}/table2", summary="The threshold table (the paper's Table 2) with 95% intervals",
            responses={200: {"content": {"text/csv": {}, "application/x-tex": {}}}, **problem_responses(401, 404, 409)})
def table2(study_id: str, format: Literal["csv", "latex"] = "csv", key: ApiKey = Depends(researcher),
           session: Session = Depends(get_db)) -> Response:
    from app.stats.export import table2_csv, table2_latex

    study = _study(session, study_id, key)
    stats = _results(session, study, 0, 0)
    if study.arms is not None:
        from app.stats.arms_report import arms_table2_csv

        if format == "latex":
            body = "".join(table2_latex({**e, "methods": {"a": e["arms"][0], "b": e["arms"][1]}},
                                        label=f"tab:preference-{e['arms'][0]}-{e['arms'][1]}")
                           for e in stats["arm_pairs"])
            return PlainTextResponse(body, media_type="application/x-tex", headers={
                "Content-Disposition": f'attachment; filename="survey-{study.id}-table2.tex"'})
        return PlainTextResponse(arms_table2_csv(stats), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="survey-{study.id}-table2.csv"'})
    if format == "latex":
        return PlainTextResponse(table2_latex(stats), media_type="application/x-tex", headers={
            "Content-Disposition": f'attachment; filename="survey-{study.id}-table2.tex"'})
    return PlainTextResponse(table2_csv(stats), media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="survey-{study.id}-table2.csv"'})


# -- the machine-rater pilot (docs/pilot.md): its own votes, never part of the human statistics -----------------

@router.post("/{study_id}/machine-votes", response_model=MachineVotesOut, status_code=202,
             summary="Run the machine-rater pilot on the study's pairs",
             description="A judge network (the digit presets' feature CNN) scores both images of every real pair "
                         "and simulated machine raters answer around its preference. The votes are stored apart "
                         "from human votes (`survey_machine_votes`) and never enter the human statistics. "
                         "Idempotent: a repeat with the same settings returns the same job and stores no "
                         "second vote. 409 when the preset has no judge, the study is not open yet, or machine "
                         "votes of other settings exist (DELETE them first).",
             responses=problem_responses(401, 404, 409))
def run_machine_votes(study_id: str, request: Request, response: Response, body: MachinePilotSpec | None = None,
                      key: ApiKey = Depends(require_api_key), session: Session = Depends(get_db)) -> dict:
    from app.survey import machine
    from worker.celery_app import MACHINE_VOTES_TASK_NAME
    from worker.survey_models import MachineVoteJob

    study = _study(session, study_id, key)
    settings = (body or MachinePilotSpec()).model_dump()
    try:
        job, created = machine.request(session, study, settings, key.id)
    except machine.PilotRefused as exc:
        raise HTTPException(409, str(exc)) from None
    if created or (job.status == "queued" and job.enqueued_at is None):
        sent = request.app.state.enqueuer.send([job.id], MACHINE_VOTES_TASK_NAME)
        jobs.mark_enqueued(session, sent, model=MachineVoteJob)
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/surveys/{study.id}/machine-votes"
    return machine.status(session, study)


@router.get("/{study_id}/machine-votes", summary="The machine-rater pilot's status, or its votes as CSV",
            description="`format=json` (default): the latest pilot job, its progress and the number of machine votes. "
                        "`format=csv`: one row per machine vote (pair, rater `machine-NN`, side, choice, A's side, "
                        "the judge's utilities, settings, weights sha256, code version): a file of its own, "
                        "apart from the human votes' export.",
            responses={200: {"content": {"application/json": {}, "text/csv": {}}}, **problem_responses(401, 404)})
def machine_votes_status(study_id: str, request: Request, format: Literal["json", "csv"] = "json",
                         key: ApiKey = Depends(researcher), session: Session = Depends(get_db)) -> Response:
    from app.survey import machine

    study = _study(session, study_id, key)
    _send_machine_jobs(request, session, study)
    if format == "csv":
        return PlainTextResponse(machine.votes_csv(session, study), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="survey-{study.id}-machine-votes.csv"'})
    return JSONResponse(jsonable_encoder(MachineVotesOut(**machine.status(session, study))))


@router.delete("/{study_id}/machine-votes", status_code=204, summary="Delete the study's machine votes and pilot jobs",
               description="To run the pilot again with other settings. A running pilot is asked to stop.",
               responses=problem_responses(401, 404))
def delete_machine_votes(study_id: str, key: ApiKey = Depends(require_api_key),
                         session: Session = Depends(get_db)) -> Response:
    from worker import machine_votes

    study = _study(session, study_id, key)
    machine_votes.delete_all(session, study.id)
    return Response(status_code=204)


def _machine_results(session: Session, study: Study, n_boot: int, seed: int) -> dict:
    from app.stats.summary import jsonable
    from app.survey import machine

    try:
        return jsonable(machine.results(session, study, n_boot=n_boot, seed=seed))
    except ValueError as exc:
        raise HTTPException(409, f"no machine statistics for study {study.id}: {exc}") from None


@router.get("/{study_id}/machine-results",
            summary="The machine votes' statistics, power plan and agreement with people",
            description="The survey's statistics (threshold table, sign tests; every arm pair and the ranking for "
                        "more than two arms) and the power planner, computed on the machine votes alone and "
                        "labelled a proxy, with `agreement_with_humans` (per-pair majority agreement, Gwet's AC1, "
                        "Krippendorff's alpha) once the study also has human votes.",
            responses=problem_responses(401, 404, 409))
def machine_results(study_id: str, n_boot: NBoot = 2000, seed: Seed = 0, key: ApiKey = Depends(researcher),
                    session: Session = Depends(get_db)) -> JSONResponse:
    study = _study(session, study_id, key)
    return JSONResponse(_machine_results(session, study, n_boot, seed))


@router.get("/{study_id}/machine-report", response_class=HTMLResponse,
            summary="The machine votes' statistics as an HTML report, marked a proxy",
            responses=problem_responses(401, 404, 409))
def machine_report(study_id: str, n_boot: NBoot = 2000, seed: Seed = 0, key: ApiKey = Depends(researcher),
                   session: Session = Depends(get_db)) -> HTMLResponse:
    from app.survey.report import machine_report_html

    study = _study(session, study_id, key)
    got = _machine_results(session, study, n_boot, seed)
    return HTMLResponse(machine_report_html(study, got), headers={
        **REPORT_HEADERS, "Content-Disposition": f'inline; filename="survey-{study.id}-machine-report.html"'})
