"""What the worker-job APIs serve alike: who may see a job, and each kind's list, get and cancel routes.

A job is visible to the key that created it and to admin keys; to any other
key it is the same 404 as an unknown id, so ids cannot be probed. Listing
and reading take the key or a signed-in researcher's cookie (so the pages'
links work in a browser); cancelling takes the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.auth import require_api_key
from app.deps import get_db
from app.errors import excerpt, problem_responses
from app.keys import ApiKey
from app.survey.researcher_auth import researcher
from worker import jobs, media
from worker.config import Settings


def media_file(settings: Settings, rel: str, media_type: str, what: str) -> FileResponse:
    """A job's stored file (an upload or a result) by its path under the media directory."""
    path = media.resolve(settings.media_dir, rel)
    if not path.is_file():
        raise HTTPException(404, f"{what} is recorded but missing from the media directory")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=86400"})


def may_see(job: Any, key: ApiKey) -> bool:
    """A job (or evaluation) is its creator's and the admins'."""
    return job is not None and (key.is_admin or job.owner_key_id == key.id)


def visible(job: Any, key: ApiKey, job_id: str, noun: str) -> Any:
    """``job`` when ``key`` may see it; else a 404 that reads "no <noun> with id ...", as for a missing one."""
    if not may_see(job, key):
        raise HTTPException(404, f"no {noun} with id {excerpt(job_id, 40)!r}")
    return job


@dataclass(frozen=True)
class JobApi:
    """One job kind as the API serves it."""
    noun: str                        # names the job in the 404 ("no <noun> with id ...")
    model: type                      # its table, whose row jobs.request_cancel marks
    store: ModuleType                # its worker module: get(session, id), list_for(session, owner, limit)
    resource: Callable[[Any], dict]  # a job as the API shows it

    def find(self, session: Session, key: ApiKey, job_id: str) -> Any:
        return visible(self.store.get(session, job_id), key, job_id, self.noun)

    def add_routes(self, router: APIRouter, path: str, *, out: type[BaseModel], listing: type[BaseModel],
                   list_route: tuple[str, str], get_route: tuple[str, str],
                   cancel_route: tuple[str, str]) -> None:
        """``GET path``, ``GET path/{job_id}`` and ``POST path/{job_id}/cancel`` on ``router``; each
        ``*_route`` is (name, summary): the name makes the OpenAPI operation id, as a function's name would."""
        def list_jobs(limit: int = Query(50, ge=1, le=200), key: ApiKey = Depends(researcher),
                      session: Session = Depends(get_db)) -> dict:
            rows = self.store.list_for(session, None if key.is_admin else key.id, limit)
            return {"items": [self.resource(j) for j in rows]}

        def get_job(job_id: str, key: ApiKey = Depends(researcher), session: Session = Depends(get_db)) -> dict:
            return self.resource(self.find(session, key, job_id))

        def cancel_job(job_id: str, key: ApiKey = Depends(require_api_key),
                       session: Session = Depends(get_db)) -> dict:
            self.find(session, key, job_id)
            try:
                job = jobs.request_cancel(session, job_id, model=self.model)
            except jobs.JobStateError as exc:
                raise HTTPException(409, str(exc)) from None
            return self.resource(job)

        (list_name, list_summary), (get_name, get_summary), (cancel_name, cancel_summary) = \
            list_route, get_route, cancel_route
        router.add_api_route(path, list_jobs, methods=["GET"], response_model=listing, name=list_name,
                             summary=list_summary, responses=problem_responses(401))
        router.add_api_route(f"{path}/{{job_id}}", get_job, methods=["GET"], response_model=out, name=get_name,
                             summary=get_summary, responses=problem_responses(401, 404))
        router.add_api_route(f"{path}/{{job_id}}/cancel", cancel_job, methods=["POST"], response_model=out,
                             name=cancel_name, summary=cancel_summary, responses=problem_responses(401, 404, 409))
