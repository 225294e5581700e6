"""/v1/classifications: a PNG classified by the diffusion model (or a classifier at t = 0) as a worker job.

The diffusion classifier costs hundreds of network evaluations per image, so
every classification is a job: POST answers 202 with it (checked first: a bad
image, method, preset or schedule is a 422 naming the field and nothing is
stored), a worker runs it (``worker.classification_runner``) and reports
progress in network evaluations; GET shows the class probabilities once it
succeeded. Creating needs an API key; reading, the key or a researcher's
cookie, as for analyses.
"""
from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from app.api.job_routes import JobApi, media_file
from app.auth import rate_limited_api_key
from app.deps import get_db, get_settings
from app.errors import excerpt, problem_responses
from app.keys import ApiKey
from app.schemas import ClassificationList, ClassificationOut, ClassificationRequest
from app.survey.researcher_auth import researcher
from app.validation import http_error
from worker import classification_jobs, jobs, media
from worker.celery_app import CLASSIFICATION_TASK_NAME
from worker.classification_models import ClassificationJob
from worker.config import Settings

router = APIRouter(prefix="/v1", tags=["classifications"])
API = "/v1/classifications"


def resource(job: ClassificationJob) -> dict:
    base = f"{API}/{job.id}"
    step = job.progress_total if job.status == "succeeded" else min(job.progress_step, job.progress_total)
    r = job.result or {}
    return {"id": job.id, "status": job.status, "method": job.method, "preset": job.preset, "settings": job.settings,
            "image_sha256": job.image_sha256,
            "progress": round(step / job.progress_total, 4) if job.progress_total else 0.0,
            "progress_step": step, "progress_total": job.progress_total, "error": job.error,
            "attempts": job.attempts, "created_at": job.created_at, "started_at": job.started_at,
            "finished_at": job.finished_at, "prediction": r.get("prediction"), "class_name": r.get("class_name"),
            "probabilities": r.get("probabilities"), "network_evaluations": r.get("network_evaluations"),
            "links": {"self": base, "cancel": f"{base}/cancel", "image": f"{base}/image.png"}}


JOBS = JobApi(noun="classification", model=ClassificationJob, store=classification_jobs, resource=resource)


def _resolve(body: ClassificationRequest) -> tuple[str, dict, bytes]:
    """(preset name, complete settings, normalised PNG); every problem a 422 at its field."""
    from model_core.analysis.inputs import ImageRefused, from_png
    from model_core.diffusion_classifier.schedule import DEMO_SCHEDULE, format_schedule, parse_schedule
    from model_core.errors import SettingError
    from model_core.presets import get_preset

    errors = []
    try:
        preset = get_preset(body.preset)
    except ValueError as exc:
        raise RequestValidationError([http_error(("preset",), str(exc), excerpt(body.preset))]) from None
    settings: dict = {"method": body.method}
    if body.method == "diffusion":
        if not bool(preset.diffusion["model"].get("class_cond", True)):
            errors.append(http_error(("method",), f"preset {preset.name!r} has an unconditional diffusion model; "
                                                  "use vanilla or robust", body.method))
        try:
            stages = parse_schedule(body.schedule or DEMO_SCHEDULE, preset.num_classes)
            settings.update(schedule=format_schedule(stages), seed=body.seed or 0)
        except SettingError as exc:
            errors.append(http_error(("schedule",), exc.render({"schedule": "schedule"}), excerpt(body.schedule)))
    else:
        if body.method not in preset.classifiers:
            errors.append(http_error(("method",), f"preset {preset.name!r} has no {body.method} classifier",
                                     body.method))
        for name in ("schedule", "seed"):
            if getattr(body, name) is not None:
                errors.append(http_error((name,), f"{name} applies to method diffusion only", None))
    png = b""
    try:
        data = base64.b64decode(body.png_base64, validate=True)
        png = from_png(data, None, image_size=preset.image_size, channels=preset.in_channels).png
    except (binascii.Error, ValueError) as exc:
        msg = str(exc) if isinstance(exc, ImageRefused) else "png_base64 is not valid base64"
        errors.append(http_error(("png_base64",), msg, None))
    if errors:
        raise RequestValidationError(errors)
    return preset.name, settings, png


@router.post("/classifications", status_code=202, response_model=ClassificationOut,
             summary="Classify a PNG (diffusion classifier or a classifier at t = 0)",
             description="Starts a worker job; follow links.self until status is succeeded, then read "
                         "probabilities. progress counts network evaluations (the diffusion classifier's "
                         "schedule sets how many).",
             responses={202: {"description": "accepted; the job, also at the Location header",
                              "headers": {"Location": {"schema": {"type": "string"}}}},
                        **problem_responses(401, 429)})
def create_classification(body: ClassificationRequest, request: Request, response: Response,
                          key: ApiKey = Depends(rate_limited_api_key), session: Session = Depends(get_db),
                          settings: Settings = Depends(get_settings)) -> dict:
    preset, jsettings, png = _resolve(body)
    digest, rel = media.store_png(settings.media_dir, png)
    job = classification_jobs.create(session, method=body.method, preset=preset, settings=jsettings,
                                     image_sha256=digest, image_path=rel, owner_key_id=key.id)
    sent = request.app.state.enqueuer.send([job.id], CLASSIFICATION_TASK_NAME)
    jobs.mark_enqueued(session, sent, model=ClassificationJob)
    session.refresh(job)
    response.headers["Location"] = f"{API}/{job.id}"
    return resource(job)


JOBS.add_routes(router, "/classifications", out=ClassificationOut, listing=ClassificationList,
                list_route=("list_classifications", "Your classification jobs, newest first"),
                get_route=("get_classification", "A classification job"),
                cancel_route=("cancel_classification", "Cancel a classification job"))


@router.get("/classifications/{job_id}/image.png", summary="The image a classification job classifies",
            response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}, **problem_responses(401, 404)})
def classification_image(job_id: str, key: ApiKey = Depends(researcher), session: Session = Depends(get_db),
                         settings: Settings = Depends(get_settings)) -> FileResponse:
    job = JOBS.find(session, key, job_id)
    return media_file(settings, job.image_path, "image/png", f"the image of classification {job_id}")
