"""/v1/generations: create (202 + Location), read, list, stream progress, cancel."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from app.api import serialize
from app.auth import client_identity, generation_access, rate_limited_generation_access
from app.deps import get_db, get_settings
from app.errors import excerpt, problem_responses
from app.keys import ApiKey
from app.schemas import GenerationList, GenerationOut, GenerationRequest, Status
from app.survey.access import job_visible
from app.validation import RequestInvalid, validate_generation
from worker import jobs, notify
from worker.config import Settings
from worker.models import Job

router = APIRouter(prefix="/v1", tags=["generations"])


def _visible(session: Session, job: Job | None, key: ApiKey | None, settings: Settings, job_id: str) -> Job:
    """404 for unknown jobs, for other keys' jobs when generation is key-protected, and for a
    survey study's jobs unless the key may see the study (``app.survey.access.job_visible``)."""
    if job is None or not job_visible(session, key, job, requires_key=settings.generation_requires_key):
        raise HTTPException(404, f"no generation with id {excerpt(job_id, 40)!r}")
    return job


def _request_hash(body: GenerationRequest) -> str:
    # Without previews the hash is what it was before the field existed, so retried requests still match.
    fields = body.model_dump(mode="json", exclude={"previews"} if body.previews is None else None)
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@router.post("/generations", status_code=202, response_model=GenerationOut,
             summary="Start a generation job",
             responses={202: {"description": "accepted; the job resource, also at the Location header",
                              "headers": {"Location": {"schema": {"type": "string"}}}},
                        **problem_responses(401, 429)})
def create_generation(
    body: GenerationRequest, request: Request, response: Response,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", max_length=255, min_length=1,
        description="repeat a request safely: the same key with the same body returns the same job")] = None,
    key: ApiKey | None = Depends(rate_limited_generation_access),
    session: Session = Depends(get_db), settings: Settings = Depends(get_settings),
) -> dict:
    try:
        spec = validate_generation(body, settings)
    except RequestInvalid as exc:
        raise RequestValidationError(exc.errors) from None
    try:
        job, created = jobs.create_job(session, spec, owner_key_id=key.id if key else None,
                                       idempotency_key=idempotency_key, request_hash=_request_hash(body),
                                       anonymous_scope=client_identity(request, key))
    except jobs.IdempotencyConflict as exc:
        raise RequestValidationError([{
            "type": "value_error", "loc": ("header", "Idempotency-Key"), "input": idempotency_key,
            "msg": f"{exc}; use a new key for a different request"}]) from None
    if created:
        sent = request.app.state.enqueuer.send([job.id])
        jobs.mark_enqueued(session, sent)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = serialize.job_url(job.id)
    job = jobs.get_job(session, job.id)
    return serialize.generation(job)


@router.get("/generations", response_model=GenerationList, summary="List generation jobs, newest first",
            responses=problem_responses(401))
def list_generations(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    # The pattern is documented, not enforced here: jobs.decode_cursor refuses anything it did not issue
    # with a 422 naming the cursor.
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page",
                                        json_schema_extra={"pattern": "^[A-Za-z0-9_-]*$"})] = None,
    status: Annotated[Status | None, Query()] = None,
    key: ApiKey | None = Depends(generation_access),
    session: Session = Depends(get_db), settings: Settings = Depends(get_settings),
) -> dict:
    try:
        # A survey study's jobs are listed to its owner key (and admins) only: a rater must not
        # find the originals of the images they are shown.
        rows, next_cursor = jobs.list_jobs(session, limit=limit, cursor=cursor, status=status,
                                           owner_key_id=key.id if key else None,
                                           only_owner=settings.generation_requires_key,
                                           all_study_jobs=bool(key and key.is_admin))
    except ValueError as exc:
        raise RequestValidationError([{"type": "value_error", "loc": ("query", "cursor"), "msg": str(exc),
                                       "input": cursor}]) from None
    return {"items": [serialize.generation(j) for j in rows], "next_cursor": next_cursor}


@router.get("/generations/{job_id}", response_model=GenerationOut, summary="A generation job",
            responses=problem_responses(401, 404))
def get_generation(job_id: str, key: ApiKey | None = Depends(generation_access),
                   session: Session = Depends(get_db), settings: Settings = Depends(get_settings)) -> dict:
    return serialize.generation(_visible(session, jobs.get_job(session, job_id), key, settings, job_id))


@router.post("/generations/{job_id}/cancel", response_model=GenerationOut, summary="Cancel a generation job",
             description="A queued job is canceled at once. A running job stops at its next sampling step: "
                         "the response shows cancel_requested, and status becomes 'canceled' shortly after.",
             responses=problem_responses(401, 404, 409))
def cancel_generation(job_id: str, key: ApiKey | None = Depends(generation_access),
                      session: Session = Depends(get_db), settings: Settings = Depends(get_settings)) -> dict:
    _visible(session, jobs.get_job(session, job_id, with_images=False), key, settings, job_id)
    try:
        job = jobs.request_cancel(session, job_id)
    except jobs.JobStateError as exc:
        raise HTTPException(409, str(exc)) from None
    notify.job_changed(settings, [job_id])  # a queued job is canceled now: its streams end now
    return serialize.generation(job)


# One server-sent event as a client's parser reads it (OpenAPI 3.1: the schema of a
# text/event-stream describes each event): `data` is JSON text, a progress snapshot or,
# for `done`, the whole job resource (GenerationOut).
SSE_EVENT = {
    "type": "object", "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["progress", "done"]},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "description": "progress: {id, status, progress, progress_step, progress_total, "
                                "cancel_requested, error}; done: the job resource"},
        "id": {"type": "string", "description": "status:step for progress, the final status for done"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


def _format_event(event: str, data: dict, event_id: str | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, default=str, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


@router.get("/generations/{job_id}/events", summary="Progress as server-sent events",
            response_class=StreamingResponse,
            description="`progress` events (status, progress, step counts) whenever they change, then one "
                        "`done` event carrying the whole job resource when it succeeds, fails or is canceled; "
                        "then the stream ends. A comment line is sent every 15 s to keep proxies from timing out.",
            responses={200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
                              "description": "an event stream: `progress` events, then one `done` event"},
                       **problem_responses(401, 404)})
async def generation_events(job_id: str, request: Request, key: ApiKey | None = Depends(generation_access),
                            settings: Settings = Depends(get_settings)) -> StreamingResponse:
    Session = request.app.state.sessions

    def load(with_images: bool = False) -> Job | None:
        # A progress snapshot needs the job row only; the images are read once, for `done`.
        with Session() as s:
            return jobs.get_job(s, job_id, with_images=with_images)

    def check() -> None:
        with Session() as s:
            _visible(s, jobs.get_job(s, job_id, with_images=False), key, settings, job_id)

    await run_in_threadpool(check)
    poll = request.app.state.sse_poll_seconds
    safety_poll = request.app.state.sse_safety_poll_seconds
    max_seconds = request.app.state.sse_max_seconds
    subscriber = request.app.state.job_events

    async def stream():
        yield "retry: 2000\n\n"
        with subscriber.watch(job_id) if subscriber is not None else contextlib.nullcontext() as watch:
            last, last_sent = None, time.monotonic()
            started = time.monotonic()
            while True:
                if watch is not None:
                    watch.clear()  # before the read: a change committed after it still wakes the wait below
                job = await run_in_threadpool(load)
                if job is None:
                    return
                snap = serialize.progress_snapshot(job)
                if snap != last:
                    last, last_sent = snap, time.monotonic()
                    yield _format_event("progress", snap, f"{snap['status']}:{snap['progress_step']}")
                if jobs.is_terminal(job.status):
                    job = await run_in_threadpool(load, True) or job
                    yield _format_event("done", serialize.generation(job), job.status)
                    return
                if time.monotonic() - last_sent > 15:
                    last_sent = time.monotonic()
                    yield ": keep-alive\n\n"
                if time.monotonic() - started > max_seconds or await request.is_disconnected():
                    return  # the client's EventSource reconnects on its own
                # Subscribed: a notification wakes us, the longer poll only covers a lost one.
                interval = safety_poll if watch is not None and subscriber.connected.is_set() else poll
                interval = min(interval, max(max_seconds - (time.monotonic() - started), 0.0))
                if watch is not None:
                    await watch.wait(interval)
                else:
                    await asyncio.sleep(interval)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
