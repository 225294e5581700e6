"""/v1/analyses: gradient maps, class maximisation, trajectories, comparison sheets and scale sweeps as jobs.

For researcher key holders: creating one needs an API key; reading it takes
the key or a signed-in researcher's cookie (so the page's links work in a
browser). A job is visible to the key that created it and to admin keys.

The request goes through ``model_core.analysis.requests`` (the resolver the
CLI uses) with this server's limits: every problem is a 422 naming its field
(``images.2.png_base64``, ``classifiers.1``, ``images.0.label``) and nothing
is stored. Only then are the uploaded images stored (normalised PNGs in the
media folder, by hash), the job inserted and its message sent; a worker runs
it (``worker.analysis_runner``) and reports progress.
"""
from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.orm import Session

from app.api.job_routes import JobApi, media_file
from app.auth import rate_limited_api_key
from app.deps import get_db, get_settings
from app.errors import excerpt, problem_responses
from app.keys import ApiKey
from app.schemas import AnalysisList, AnalysisOut, AnalysisRequest
from app.survey.researcher_auth import researcher
from app.validation import http_error
from model_core.analysis.requests import AnalysisLimits, resolve_analysis
from model_core.generation_request import RequestInvalid
from worker import analysis_jobs, jobs, media
from worker.analysis_models import AnalysisJob
from worker.celery_app import ANALYSIS_TASK_NAME
from worker.config import Settings

router = APIRouter(prefix="/v1", tags=["analyses"])
API = "/v1/analyses"
PAGE = "/researcher/analyses"


def analysis_limits(settings: Settings) -> AnalysisLimits:
    # Uploads share the generation limit (images per request); held-out images and samples are bounded by the
    # analysis limit, since a gradient or sweep over a held-out set is the point.
    return AnalysisLimits(max_uploads=settings.max_images_per_request, max_images=settings.analysis_max_images,
                          max_steps=settings.max_steps, max_scale=settings.max_scale)


def resource(job: AnalysisJob) -> dict:
    base = f"{API}/{job.id}"
    total = max(job.progress_total, 1)
    step = job.progress_total if job.status == "succeeded" else min(job.progress_step, job.progress_total)
    result = job.result or {}
    return {
        "id": job.id, "kind": job.kind, "status": job.status, "preset": job.preset, "settings": job.settings,
        "num_images": job.num_images, "progress": round(step / total, 4) if job.progress_total else 0.0,
        "progress_step": step, "progress_total": job.progress_total, "cancel_requested": job.cancel_requested,
        "error": job.error, "attempts": job.attempts, "created_at": job.created_at, "started_at": job.started_at,
        "finished_at": job.finished_at, "summary": result.get("summary"),
        "reproduce": f"rguide viz reproduce {job.kind}.json" if job.result else None,
        "files": [{"name": f["name"], "url": f"{base}/files/{f['name']}", "sha256": f["sha256"],
                   "media_type": f["media_type"], "size_bytes": f["size_bytes"]} for f in job.files or []],
        "inputs": [{"sha256": i["sha256"], "label": i.get("label"), "url": f"{base}/inputs/{i['sha256']}.png"}
                   for i in job.inputs or []],
        "links": {"self": base, "cancel": f"{base}/cancel", "page": f"{PAGE}/{job.id}",
                  "sidecar": f"{base}/sidecar.json" if job.result else None},
    }


JOBS = JobApi(noun="analysis", model=AnalysisJob, store=analysis_jobs, resource=resource)


def _fields(body: AnalysisRequest) -> dict:
    """The resolver's fields; base64 images decoded (a bad one is a 422 at its png_base64)."""
    fields = body.model_dump(exclude={"kind", "preset", "images"}, exclude_none=True)
    if body.images is not None:
        images, errors = [], []
        for i, img in enumerate(body.images):
            try:
                data = base64.b64decode(img.png_base64, validate=True)
            except (binascii.Error, ValueError):
                errors.append(http_error(("images", i, "png_base64"), "png_base64 is not valid base64", None))
                continue
            images.append({"png": data, **img.model_dump(exclude={"png_base64"}, exclude_none=True)})
        if errors:
            raise RequestValidationError(errors)
        fields["images"] = images
    return fields


def _loc(field: tuple) -> tuple:
    if len(field) >= 3 and field[0] == "images" and field[2] == "png":
        return ("images", field[1], "png_base64")
    return field


@router.post("/analyses", status_code=202, response_model=AnalysisOut, summary="Start an analysis job",
             description="Gradient maps (Figure 3), class maximisation (Figure 4), trajectories (Figure 5), "
                         "seed-matched comparison sheets (Figure 2) or a guidance-scale sweep (Tables 5, 6), run "
                         "by a worker. Follow links.self until status is succeeded; the PNGs are under files, "
                         "the numbers under summary, the JSON sidecar at links.sidecar. Needs a researcher key.",
             responses={202: {"description": "accepted; the job, also at the Location header",
                              "headers": {"Location": {"schema": {"type": "string"}}}},
                        **problem_responses(401, 429)})
def create_analysis(body: AnalysisRequest, request: Request, response: Response,
                    key: ApiKey = Depends(rate_limited_api_key), session: Session = Depends(get_db),
                    settings: Settings = Depends(get_settings)) -> dict:
    try:
        resolved = resolve_analysis(body.kind, _fields(body), preset=body.preset,
                                    limits=analysis_limits(settings))
    except RequestInvalid as exc:
        raise RequestValidationError([http_error(_loc(e.field), e.message, excerpt(e.value))
                                      for e in exc.errors]) from None
    inputs = []
    for upload in resolved.uploads:
        digest, rel = media.store_png(settings.media_dir, upload.png)
        inputs.append({"sha256": digest, "path": rel, "label": upload.label})
    job = analysis_jobs.create(session, kind=resolved.kind, preset=resolved.preset, settings=resolved.settings,
                               inputs=inputs, num_images=resolved.num_images, owner_key_id=key.id)
    sent = request.app.state.enqueuer.send([job.id], ANALYSIS_TASK_NAME)
    jobs.mark_enqueued(session, sent, model=AnalysisJob)
    session.refresh(job)
    response.headers["Location"] = f"{API}/{job.id}"
    return resource(job)


JOBS.add_routes(router, "/analyses", out=AnalysisOut, listing=AnalysisList,
                list_route=("list_analyses", "Your analysis jobs, newest first"),
                get_route=("get_analysis", "An analysis job"),
                cancel_route=("cancel_analysis", "Cancel an analysis job"))


@router.get("/analyses/{job_id}/sidecar.json", summary="The JSON sidecar of a finished analysis",
            description="Settings, seeds, provenance, summary numbers and file hashes: save it next to the "
                        "inputs (inputs/<sha256>.png) and run `rguide viz reproduce` on it.",
            responses={200: {"content": {"application/json": {}}}, **problem_responses(401, 404)})
def analysis_sidecar(job_id: str, key: ApiKey = Depends(researcher), session: Session = Depends(get_db)):
    job = JOBS.find(session, key, job_id)
    if job.result is None:
        raise HTTPException(404, f"analysis {job_id} has no sidecar yet (status {job.status})")
    return JSONResponse(job.result, headers={
        "Content-Disposition": f'attachment; filename="{job.kind}.json"'})


@router.get("/analyses/{job_id}/files/{name}", summary="A file of a finished analysis (PNG or markdown table)",
            response_class=FileResponse,
            responses={200: {"content": {"image/png": {}, "text/markdown": {}}}, **problem_responses(401, 404)})
def analysis_file(job_id: str, name: str, key: ApiKey = Depends(researcher), session: Session = Depends(get_db),
                  settings: Settings = Depends(get_settings)) -> FileResponse:
    job = JOBS.find(session, key, job_id)
    entry = next((f for f in job.files or [] if f["name"] == name), None)
    if entry is None:
        raise HTTPException(404, f"analysis {job_id} has no file {excerpt(name, 40)!r}")
    return media_file(settings, entry["path"], entry["media_type"], f"file {name}")


@router.get("/analyses/{job_id}/inputs/{sha256}.png", summary="An uploaded input image",
            response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}, **problem_responses(401, 404)})
def analysis_input(job_id: str, sha256: str, key: ApiKey = Depends(researcher), session: Session = Depends(get_db),
                   settings: Settings = Depends(get_settings)) -> FileResponse:
    job = JOBS.find(session, key, job_id)
    entry = next((i for i in job.inputs or [] if i["sha256"] == sha256), None)
    if entry is None:
        raise HTTPException(404, f"analysis {job_id} has no input {excerpt(sha256, 64)!r}")
    return media_file(settings, entry["path"], "image/png", f"input {sha256}")
