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

from worker.ids import ROW_ID

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


class Answer(Exception):
    """Raised by a dependency to send ``response`` instead of running the route (a sign-in page, a refusal)."""

    def __init__(self, response) -> None:
        super().__init__(getattr(response, "status_code", None))
        self.response = response


def install(app: FastAPI) -> None:
    @app.exception_handler(Answer)
    async def answer(request: Request, exc: Answer):
        return exc.response

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
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Several routes may share a path (GET and POST /v1/surveys are two functions); Allow names them all.
            methods = allowed_methods(request.app, request.scope)
            if methods:
                headers["Allow"] = ", ".join(methods)
                detail = f"{request.method} is not allowed here; use {', '.join(methods)}"
        return problem(exc.status_code, detail, headers=headers or None)

    _document_edge_answers(app)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal error; the server log has the details")


PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"


def _problem_response(description: str) -> dict:
    return {"description": description, "content": {PROBLEM: {"schema": {"$ref": PROBLEM_SCHEMA_REF}}}}


def _document_edge_answers(app: FastAPI) -> None:
    """Say in the OpenAPI schema what every operation can answer besides its own responses.

    * 400 on every operation: EdgeGuard refuses a query with a control
      character, whatever the route (a path with one is a 404: it names
      nothing); an operation with a body also answers 400 when the body is not
      JSON at all (FastAPI's own check);
    * 413 and 415 on every operation with a body (EdgeGuard: too large, not JSON);
    * error responses as ``application/problem+json`` with the Problem schema,
      the one media type they are sent as (FastAPI files a ``model`` under
      ``application/json``);
    * the one id format (``worker.ids``) on every ``..._id`` path parameter;
    * ``{}`` among the security requirements of the generation operations when
      this server lets anonymous clients generate (``generation_access``), so
      the document does not claim a key is needed where none is.
    """
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
            "Problem", {"type": "object", "required": ["title", "status"], "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"}}})
        optional_auth = _optional_auth_operations(app)
        for path, item in schema.get("paths", {}).items():
            for method, operation in item.items():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                for response in responses.values():
                    if PROBLEM in response.get("content", {}):
                        response["content"] = {PROBLEM: {"schema": {"$ref": PROBLEM_SCHEMA_REF}}}
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "path" and parameter["name"].endswith("_id"):
                        # worker/ids.py: every id this API hands out; any other value names nothing (404).
                        parameter["schema"].setdefault("pattern", f"^{ROW_ID.pattern}$")
                if "requestBody" in operation:
                    responses.setdefault("400", _problem_response(
                        "the query holds a control character, or the body could not be parsed (not JSON, "
                        "or not UTF-8)"))
                    responses.setdefault("413", _problem_response(
                        "the body is larger than this server's limit (RGUIDE_MAX_BODY_BYTES)"))
                    responses.setdefault("415", _problem_response("the body is not JSON (Content-Type)"))
                else:
                    responses.setdefault("400", _problem_response(
                        "the query holds a control character (e.g. a NUL byte)"))
                if (method.upper(), path) in optional_auth and operation.get("security"):
                    if {} not in operation["security"]:
                        operation["security"].append({})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _optional_auth_operations(app: FastAPI) -> set[tuple[str, str]]:
    """(METHOD, path) of the routes where a key is optional on this server (generation_access without
    RGUIDE_REQUIRE_KEY_FOR_GENERATION)."""
    from fastapi import routing
    from fastapi.routing import APIRoute

    from app.auth import generation_access

    if app.state.settings.generation_requires_key:
        return set()

    def uses(dependant) -> bool:
        return any(d.call is generation_access or uses(d) for d in dependant.dependencies)

    if hasattr(routing, "iter_route_contexts"):  # FastAPI >= 0.16x wraps included routers
        found = [(c.path_format, c.original_route) for c in routing.iter_route_contexts(app.routes)]
    else:
        found = [(getattr(r, "path_format", None), r) for r in app.routes]
    return {(method, path) for path, route in found if isinstance(route, APIRoute) and uses(route.dependant)
            for method in route.methods}


CANDIDATE_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app, scope) -> list[str]:
    """Every method some route serves at this request's path (Starlette's 405 names only the first route's:
    GET and POST /v1/surveys are two routes)."""
    from starlette.routing import Match

    return [method for method in CANDIDATE_METHODS
            if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in app.router.routes)]
