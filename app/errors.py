"""Errors as RFC 9457 problem+json; validation errors keep FastAPI's 422 shape.

A 422's ``detail`` lists each problem with ``loc`` (e.g. ``["body",
"class_labels", 1]``), so a client knows which field to fix. Everything else
(401, 404, 409, 429, 503, ...) is ``application/problem+json`` with a
human-readable ``detail``.
"""
from __future__ import annotations

import json
import logging
import math
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("rguide.api")
PROBLEM = "application/problem+json"
ECHO_LIMIT = 120  # characters of a bad input that an error shows back


def excerpt(value, limit: int = ECHO_LIMIT):
    """``value`` itself when short; else the start of its JSON text, marked as cut.

    An error names what was wrong without sending a large body back to its sender.
    """
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    if len(text) <= limit:
        return value
    return f"{text[:limit]}... ({len(text)} characters in all)"


def problem(status: int, detail: str | None = None, headers: dict[str, str] | None = None,
            title: str | None = None) -> JSONResponse:
    try:
        default_title = HTTPStatus(status).phrase
    except ValueError:
        default_title = "Error"
    body = {"type": "about:blank", "title": title or default_title, "status": status}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM)


def problem_responses(*codes: int) -> dict:
    """OpenAPI ``responses`` entries for the given problem status codes."""
    from app.schemas import Problem

    return {code: {"model": Problem, "content": {PROBLEM: {}},
                   "description": HTTPStatus(code).phrase} for code in codes}


def _json_safe(value):
    """Echoed inputs may hold NaN or infinities (Python's JSON parser accepts them); JSON cannot."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        found = exc.errors()
        if any(e.get("type") == "json_invalid" for e in found):
            # Not JSON at all: the 400 the OpenAPI promises, not a field-by-field 422.
            where = next(e for e in found if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
            return problem(400, f"the body is not valid JSON{': ' + str(where)[:ECHO_LIMIT] if where else ''}")
        short = [{**e, "input": excerpt(e["input"])} if "input" in e else e for e in found]
        return JSONResponse({"detail": _json_safe(jsonable_encoder(short))}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem(exc.status_code, detail, headers=getattr(exc, "headers", None))

    _document_unparseable_bodies(app)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal error; the server log has the details")


def _document_unparseable_bodies(app: FastAPI) -> None:
    """Every operation with a body answers 400 when the body is not JSON at all
    (FastAPI's own check, before validation); say so in the OpenAPI schema."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        problem_schema = {"type": "object", "required": ["type", "title", "status"], "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"}}}
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                if isinstance(operation, dict) and "requestBody" in operation:
                    operation.setdefault("responses", {}).setdefault("400", {
                        "description": "the body could not be parsed (not JSON, or not UTF-8)",
                        "content": {PROBLEM: {"schema": problem_schema}}})
        return schema

    app.openapi = openapi
