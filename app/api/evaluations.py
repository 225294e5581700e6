"""/v1/evaluations: FID, precision, recall and label accuracy per method and scale, fanned out over the workers.

For researcher key holders (as analyses). The request is resolved by
``model_core.evaluation.plan`` (the rules ``rguide evaluate`` uses): every
problem is a 422 naming its field, and nothing is stored. The evaluation is
then cut into shards (``shard_size`` images of one row each, a whole number
of feature blocks), one broker message per shard; whichever workers are free
run them (``worker.evaluation_runner``), the reaper re-sends the shards of a
lost worker, and each row's metrics appear as soon as its last shard is in.

The feature network and the real images are the preset's as the server's
operator configured them (``extra.evaluation`` in the preset, e.g.
``$RGUIDE_INCEPTION_WEIGHTS``): a request cannot name files on the server.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from sqlalchemy.orm import Session

from app.api import job_routes
from app.auth import rate_limited_api_key, require_api_key
from app.deps import get_db, get_settings
from app.errors import excerpt, problem_responses
from app.keys import ApiKey
from app.survey.researcher_auth import researcher
from app.validation import http_error
from model_core.errors import SettingError
from worker import evaluation_jobs, jobs
from worker.celery_app import EVALUATION_TASK_NAME
from worker.config import Settings
from worker.evaluation_models import Evaluation, EvaluationShard

router = APIRouter(prefix="/v1", tags=["evaluations"])
API = "/v1/evaluations"
PAGE = "/researcher/evaluations"
# Nine rows of the paper's 50,000 images (its scale sweep), with room for a seed-noise repeat.
MAX_IMAGES = 1_000_000
MAX_SHARDS = 20_000  # rows in the shards table and broker messages per evaluation
Name = Annotated[str, Field(max_length=64)]
Scale = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class EvaluationRequest(BaseModel):
    """An evaluation as ``rguide evaluate`` takes it (flag names as fields), plus how to cut it into shards."""
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"preset": "demo", "methods": ["none", "vanilla", "robust"], "scales": [0.5, 1, 2], "per_class": 50},
        {"preset": "demo", "methods": ["robust"], "scales": [1], "samplers": ["ddpm:100", "dpmpp_2m:20"],
         "per_class": 20, "shard_size": 100},
    ]})

    preset: Name | None = Field(None, description="default: the server's default preset")
    methods: list[Name] = Field(["none", "vanilla", "robust"], min_length=1, max_length=16)
    scales: list[Scale] = Field([0.25, 0.5, 1.0, 2.0], min_length=1, max_length=32)
    method_scales: dict[Name, list[Scale]] | None = Field(None, description="per-method scales over scales")
    per_class: StrictInt = Field(50, ge=1, le=100_000, description="generated images per class and row")
    steps: Annotated[str, Field(max_length=32)] | None = Field(None, description="respacing (default: preset's)")
    sampler: Name | None = None
    samplers: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None, max_length=16, description="SAMPLER:STEPS row sets on the same seeds; replaces steps/sampler")
    seed: StrictInt = Field(0, ge=0, le=2**62, description="image i of every row uses seed + i")
    seed_noise: StrictBool = Field(False, description="the reference rows again on seeds seed + N + i")
    k: StrictInt = Field(3, ge=1, le=100, description="k of the k-NN precision/recall")
    feature_batch: StrictInt = Field(256, ge=1, le=4096,
                                     description="images per feature-network batch (fixed blocks of each row)")
    shard_size: StrictInt = Field(256, ge=1, le=100_000, description="images per shard: a multiple of "
                                                                      "feature_batch")


def _invalid(field: str, msg: str, value: Any) -> RequestValidationError:
    return RequestValidationError([http_error((field,), msg, excerpt(value))])


def resolve(body: EvaluationRequest, settings: Settings):
    """(EvalSettings, plan, shards) or a 422 naming the field."""
    from model_core.evaluation.plan import EvalSettings, plan, shards
    from model_core.presets import get_preset

    try:
        preset = get_preset(body.preset)
    except ValueError as exc:
        raise _invalid("preset", str(exc), body.preset) from None
    if body.samplers is not None and (body.steps is not None or body.sampler is not None):
        raise _invalid("samplers", "samplers names the steps of every row set: leave out steps and sampler",
                       body.samplers)
    es = EvalSettings(preset=preset.name, methods=list(body.methods), scales=[float(s) for s in body.scales],
                      method_scales={m: [float(s) for s in v] for m, v in body.method_scales.items()}
                      if body.method_scales else None, per_class=body.per_class, steps=body.steps,
                      sampler=body.sampler, seed=body.seed, k=body.k, samplers=body.samplers,
                      seed_noise=body.seed_noise, feature_batch=body.feature_batch)
    try:
        p = plan(es)
        images = p.n * len(p.rows)
        if images > MAX_IMAGES:
            raise _invalid("per_class", f"{images} images in all; this server runs at most {MAX_IMAGES} per "
                                        "evaluation", body.per_class)
        per_row = -(-p.n // body.shard_size)
        if per_row * len(p.rows) > MAX_SHARDS:
            raise _invalid("shard_size", f"{per_row * len(p.rows)} shards; at most {MAX_SHARDS} per evaluation: "
                                         "give a larger shard_size", body.shard_size)
        cut = shards(p, body.shard_size)
    except SettingError as exc:
        # The feature network and real images are the preset's here: a problem with them is the preset's.
        field = exc.settings[0] if exc.settings[0] in EvaluationRequest.model_fields else "preset"
        raise _invalid(field, exc.render(), getattr(body, field, None)) from None
    missing = preset.missing_checkpoints(list(body.methods))
    if missing:
        raise _invalid("methods", "; ".join(missing), body.methods)
    if max(r.num_steps for r in p.rows) > settings.max_steps:
        raise _invalid("steps", f"at most {settings.max_steps} sampling steps", body.steps or body.samplers)
    if any(r.scale > settings.max_scale for r in p.rows):
        raise _invalid("scales", f"scales are at most {settings.max_scale}", body.scales)
    return es, p, cut


def resource(session: Session, ev: Evaluation) -> dict:
    info = evaluation_jobs.summary(session, ev.id)
    status = evaluation_jobs.status_of(ev, info["shards"])
    total = max(info["progress_total"], 1)
    done_rows = ev.rows or {}
    rows = [{**r, "result": done_rows.get(str(r["index"]))} for r in ev.plan["rows"]]
    base = f"{API}/{ev.id}"
    return {
        "id": ev.id, "status": status, "preset": ev.preset, "settings": ev.settings, "shard_size": ev.shard_size,
        "num_shards": ev.num_shards, "num_images": ev.num_images, "shards": info["shards"],
        "progress": 1.0 if status == "succeeded" else round(info["progress_step"] / total, 4),
        "progress_step": info["progress_step"], "progress_total": info["progress_total"],
        "rows_done": len(done_rows), "rows": rows, "cancel_requested": ev.cancel_requested,
        "created_at": ev.created_at, "finished_at": ev.finished_at,
        "report": ev.result,
        "links": {"self": base, "cancel": f"{base}/cancel", "resume": f"{base}/resume", "shards": f"{base}/shards",
                  "page": f"{PAGE}/{ev.id}", "markdown": f"{base}/results.md" if ev.result else None},
    }


def visible(ev: Evaluation | None, key: ApiKey, evaluation_id: str) -> Evaluation:
    return job_routes.visible(ev, key, evaluation_id, "evaluation")


def _send(request: Request, session: Session, shard_ids: list[str]) -> None:
    sent = request.app.state.enqueuer.send(shard_ids, EVALUATION_TASK_NAME)
    jobs.mark_enqueued(session, sent, model=EvaluationShard)


@router.post("/evaluations", status_code=202, summary="Start an evaluation on the workers",
             description="FID, precision, recall and label accuracy per (sampler, method, scale) row, as `rguide "
                         "evaluate` computes them, with the work cut into shards that any free worker runs. "
                         "Follow links.self: rows fill in as they complete; links.markdown has the table. "
                         "Needs a researcher key.",
             responses={202: {"description": "accepted", "headers": {"Location": {"schema": {"type": "string"}}}},
                        **problem_responses(401, 429)})
def create_evaluation(body: EvaluationRequest, request: Request, response: Response,
                      key: ApiKey = Depends(rate_limited_api_key), session: Session = Depends(get_db),
                      settings: Settings = Depends(get_settings)) -> dict:
    es, p, cut = resolve(body, settings)
    steps = {r.index: r.num_steps for r in p.rows}
    ev, ids = evaluation_jobs.create(session, preset=p.preset, settings=es.to_dict(), plan=p.to_dict(),
                                     shards=[(s.row, s.start, s.stop, steps[s.row]) for s in cut],
                                     shard_size=body.shard_size, owner_key_id=key.id)
    _send(request, session, ids)
    session.refresh(ev)
    response.headers["Location"] = f"{API}/{ev.id}"
    return resource(session, ev)


@router.get("/evaluations", summary="Your evaluations, newest first", responses=problem_responses(401))
def list_evaluations(limit: int = Query(50, ge=1, le=200), key: ApiKey = Depends(researcher),
                     session: Session = Depends(get_db)) -> dict:
    rows = evaluation_jobs.list_for(session, None if key.is_admin else key.id, limit)
    return {"items": [resource(session, e) for e in rows]}


@router.get("/evaluations/{evaluation_id}", summary="An evaluation: status, progress over its shards, rows so far",
            responses=problem_responses(401, 404))
def get_evaluation(evaluation_id: str, key: ApiKey = Depends(researcher), session: Session = Depends(get_db)) -> dict:
    return resource(session, visible(evaluation_jobs.get(session, evaluation_id), key, evaluation_id))


@router.get("/evaluations/{evaluation_id}/shards", summary="The shards of an evaluation",
            responses=problem_responses(401, 404))
def evaluation_shards(evaluation_id: str, key: ApiKey = Depends(researcher),
                      session: Session = Depends(get_db)) -> dict:
    visible(evaluation_jobs.get(session, evaluation_id), key, evaluation_id)
    return {"items": [{"id": s.id, "row": s.row_index, "start": s.start, "stop": s.stop, "status": s.status,
                       "progress_step": s.progress_step, "progress_total": s.progress_total,
                       "attempts": s.attempts, "computed": s.computed, "worker": s.worker, "error": s.error,
                       "seconds": s.seconds} for s in evaluation_jobs.shards_of(session, evaluation_id)]}


@router.post("/evaluations/{evaluation_id}/cancel", summary="Cancel an evaluation",
             responses=problem_responses(401, 404, 409))
def cancel_evaluation(evaluation_id: str, key: ApiKey = Depends(require_api_key),
                      session: Session = Depends(get_db)) -> dict:
    ev = visible(evaluation_jobs.get(session, evaluation_id), key, evaluation_id)
    if ev.result is not None:
        raise HTTPException(409, f"evaluation {evaluation_id} already succeeded; there is nothing to cancel")
    evaluation_jobs.cancel(session, evaluation_id)
    session.refresh(ev)
    return resource(session, ev)


@router.post("/evaluations/{evaluation_id}/resume", summary="Run the shards that failed or were canceled again",
             description="Finished shards are kept and never computed again.",
             responses=problem_responses(401, 404, 409))
def resume_evaluation(evaluation_id: str, request: Request, key: ApiKey = Depends(require_api_key),
                      session: Session = Depends(get_db)) -> dict:
    ev = visible(evaluation_jobs.get(session, evaluation_id), key, evaluation_id)
    if ev.result is not None:
        raise HTTPException(409, f"evaluation {evaluation_id} already succeeded; there is nothing to resume")
    _send(request, session, evaluation_jobs.resume(session, evaluation_id))
    session.refresh(ev)
    return resource(session, ev)


@router.get("/evaluations/{evaluation_id}/results.md", response_class=PlainTextResponse,
            summary="The finished evaluation's table (markdown, as rguide evaluate writes it)",
            responses=problem_responses(401, 404))
def evaluation_markdown(evaluation_id: str, key: ApiKey = Depends(researcher),
                        session: Session = Depends(get_db)) -> PlainTextResponse:
    ev = visible(evaluation_jobs.get(session, evaluation_id), key, evaluation_id)
    if ev.result is None:
        raise HTTPException(404, f"evaluation {evaluation_id} has no table yet")
    return PlainTextResponse(ev.result["markdown"], media_type="text/markdown")
