"""Generation requests at the edge: the core's resolver, this server's limits, FastAPI's 422 format.

``model_core.generation_request`` holds the rules (labels, scales, steps,
seeds, weights present), shared with the survey and ``rguide sample``; this
module adds the server's limits from ``Settings`` and turns each field-keyed
problem into a FastAPI-style error under ``body``. Torch-free, so the API
never imports torch.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from model_core.generation_request import FieldError, Limits, ResolvedRequest, resolve_generation
from model_core.generation_request import RequestInvalid as CoreRequestInvalid
from worker.config import Settings
from worker.jobs import JobSpec


class RequestInvalid(Exception):
    """Carries FastAPI-style error dicts: {"loc": (...), "msg": ..., "type": ..., "input": ...}."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


def http_error(loc: tuple, msg: str, value: Any) -> dict[str, Any]:
    return {"type": "value_error", "loc": ("body",) + tuple(loc), "msg": msg, "input": value}


def http_errors(exc: CoreRequestInvalid, rename: dict[tuple, tuple] | None = None) -> RequestInvalid:
    """The core's field-keyed problems as 422 errors; ``rename`` maps a field key prefix to a body location."""
    rename = rename or {}
    out = []
    for e in exc.errors:
        loc = _renamed(e, rename)
        out.append(http_error(loc, e.message, e.value))
    return RequestInvalid(out)


def _renamed(e: FieldError, rename: dict[tuple, tuple]) -> tuple:
    for n in range(len(e.field), 0, -1):
        if e.field[:n] in rename:
            return rename[e.field[:n]] + e.field[n:]
    return e.field


def server_limits(settings: Settings) -> Limits:
    return Limits(max_images=settings.max_images_per_request, max_scale=settings.max_scale,
                  max_steps=settings.max_steps)


def job_spec(r: ResolvedRequest) -> JobSpec:
    return JobSpec(preset=r.preset, guidance=r.guidance, labels=r.labels, seeds=r.seeds, scales=r.scales,
                   steps=r.steps, sampler=r.sampler, num_steps=r.num_steps)


def validate_generation(body: Any, settings: Settings) -> JobSpec:
    """``body`` is an ``app.schemas.GenerationRequest``."""
    try:
        resolved = resolve_generation(preset=body.preset, class_labels=body.class_labels, guidance=body.guidance,
                                      scale=body.scale, steps=body.steps, sampler=body.sampler, seed=body.seed,
                                      limits=server_limits(settings))
    except CoreRequestInvalid as exc:
        raise http_errors(exc) from None
    spec = job_spec(resolved)
    previews = getattr(body, "previews", None) or 0
    if previews > spec.num_steps:
        raise RequestInvalid([http_error(("previews",), f"{previews} previews of a {spec.num_steps}-step run: at "
                                         "most one per sampling step", previews)])
    return replace(spec, previews=previews)
