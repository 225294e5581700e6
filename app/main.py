"""The ASGI application: ``uvicorn --factory app.main:create_app`` (``rguide api`` does this).

On start-up it brings the database schema to head (Alembic) and starts the
reaper thread, which re-sends jobs that the database says are waiting or
running but that no worker holds.
"""
from __future__ import annotations

import contextlib
import importlib
import logging

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from app import access_log, errors, job_events
from app.edge import EdgeGuard
from app.ratelimit import RateLimiter
from model_core import __version__
from worker import db
from worker.celery_app import Enqueuer
from worker.config import Settings
from worker.reaper import ReaperThread

log = logging.getLogger("rguide.api")

# "module:attribute" of every APIRouter the app mounts. Another part of the
# system adds its router here with one line (as rguide/cli.py's COMMAND_MODULES).
ROUTERS = [
    "app.api.presets:router",
    "app.api.generations:router",
    "app.api.analyses:router",
    "app.api.classifications:router",
    "app.api.robustness:router",
    "app.api.images:router",
    "app.api.health:router",
    "app.api.home:router",
    "app.survey.api:router",
    "app.survey.pages:router",
    "app.survey.researcher:router",
    "app.analysis_pages:router",
    "app.api.evaluations:router",
    "app.evaluation_pages:router",
    "app.robustness_pages:router", "app.classification_pages:router",
    "app.survey.web:static_router",
]

DESCRIPTION = """\
Generate class-conditional images guided by a **robust** or a **vanilla**
time-dependent classifier (Kawar, Ganz & Elad, TMLR 2023), or a
seed-matched robust/vanilla **pair**.

`POST /v1/generations` answers `202` with a job; follow its `Location`,
or stream `/v1/generations/{id}/events`, until `status` is `succeeded`;
then fetch each image's `url`. Validation errors are `422` with the
offending field in `detail[].loc`; other errors are `application/problem+json`.
"""


def create_app(settings: Settings | None = None, *, run_reaper: bool | None = None,
               routers: list | None = None) -> FastAPI:
    """Build the app. ``settings`` default to the environment; ``run_reaper`` to
    ``settings.reaper_interval_seconds > 0``. ``routers`` are extra APIRouters
    (e.g. the survey's) mounted alongside the generation API."""
    settings = settings or Settings.from_env()
    run_reaper = settings.reaper_interval_seconds > 0 if run_reaper is None else run_reaper

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.ensure_dirs()
        if settings.migrate_on_start:
            await run_in_threadpool(db.upgrade, settings.database_url)
        reaper = None
        if run_reaper:
            reaper = ReaperThread(settings, app.state.enqueuer, settings.reaper_interval_seconds)
            reaper.start()
        log.info("API ready: %s", ", ".join(f"{k}={v}" for k, v in settings.describe().items()))
        try:
            yield
        finally:
            if reaper is not None:
                reaper.stop()
            if app.state.job_events is not None:
                app.state.job_events.close()
            app.state.enqueuer.close()

    app = FastAPI(title="robust-guidance generation API", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.sessions = db.session_factory(settings.database_url)
    app.state.session_secret = settings.session_secret()
    app.state.enqueuer = Enqueuer(settings)
    app.state.rate_limiter = RateLimiter(settings.rate_limit, settings.rate_window_seconds, settings.redis_url,
                                         namespace=f"rguide:{settings.queue}")
    # An event stream wakes when the worker publishes a change of its job (Redis, app.job_events)
    # and otherwise reads the row every sse_poll_seconds (without Redis, or while it is
    # unreachable), or every sse_safety_poll_seconds while subscribed: there polling only
    # covers a lost notification, and fewer reads leave the CPU to the workers.
    app.state.job_events = job_events.for_settings(settings)
    app.state.sse_poll_seconds = 0.25
    app.state.sse_safety_poll_seconds = 2.0
    app.state.sse_max_seconds = 600.0
    errors.install(app)
    access_log.install()
    app.add_middleware(EdgeGuard, max_body_bytes=settings.max_body_bytes)
    for spec in ROUTERS:
        module, _, attr = spec.partition(":")
        app.include_router(getattr(importlib.import_module(module), attr))
    for router in routers or []:
        app.include_router(router)
    return app
