"""/healthz (the process answers) and /readyz (it can do useful work)."""
from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.schemas import Health, Readiness
from worker import db
from worker.presence import live_workers

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the API process answers")
def healthz() -> dict:
    return {"status": "ok"}


def _check_database(request: Request) -> tuple[bool, str]:
    settings = request.app.state.settings
    try:
        with request.app.state.sessions() as s:
            s.execute(text("SELECT 1"))
        current, head = db.current_revision(settings.database_url), db.head_revision()
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"[:300]
    if current != head:
        return False, f"schema at revision {current}, code expects {head}: run migrations"
    return True, f"schema {current}"


def _check_broker(request: Request) -> tuple[bool, str]:
    settings = request.app.state.settings
    if settings.uses_filesystem_broker:
        folder = settings.broker_folders()["queue"]
        ok = folder.is_dir() and os.access(folder, os.W_OK)
        return ok, f"filesystem broker at {folder}" + ("" if ok else " is missing or not writable")
    try:
        import redis

        redis.Redis.from_url(settings.broker_url, socket_timeout=1, socket_connect_timeout=1).ping()
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"[:300]
    return True, "redis answers"


def _check_workers(request: Request) -> tuple[bool, str]:
    settings = request.app.state.settings
    try:
        with request.app.state.sessions() as s:
            n = live_workers(s, settings)
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"[:300]
    return n >= 1, f"{n} live worker(s) on queue {settings.queue}"


@router.get("/readyz", response_model=Readiness, summary="Readiness: database, broker and at least one worker",
            responses={503: {"model": Readiness, "description": "not ready; the checks say why"}})
async def readyz(request: Request) -> JSONResponse:
    checks = {}
    for name, fn in (("database", _check_database), ("broker", _check_broker), ("workers", _check_workers)):
        ok, detail = await run_in_threadpool(fn, request)
        checks[name] = {"ok": ok, "detail": detail}
    ready = all(c["ok"] for c in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)
