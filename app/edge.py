"""Checks every request passes before routing: a clean URL, a body of bounded size, JSON where JSON is due.

One ASGI middleware, so that no route can forget them:

* a path with a control character (a NUL byte above all, which PostgreSQL
  refuses in text) is a 404, a query with one a 400, before any id reaches SQL;
* a body larger than ``Settings.max_body_bytes`` is a 413: at once when
  ``Content-Length`` says so, otherwise as soon as the streamed bytes pass
  the limit, so the API never holds more than the limit of one body;
* a request with a body to the JSON API (``/v1/...``) that is not
  ``application/json`` (or ``+json``) is a 415 naming what was sent.
"""
from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import problem

CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
JSON_TYPE = re.compile(r"^application/([a-z0-9.+-]*\+)?json$")
BODY_METHODS = {"POST", "PUT", "PATCH"}


class EdgeGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = int(max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        limit, seen = self.max_body_bytes, 0

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"the request body is larger than this server's limit of {limit} "
                                             "bytes")
            return message

        await self.app(scope, bounded_receive, send)

    def _refusal(self, scope: Scope):
        raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
        if CONTROL.search(unquote_to_bytes(raw_path)):
            # No route, id or file name holds one: such a path names nothing.
            return problem(404, "nothing here: the path holds a control character (e.g. a NUL byte)")
        if CONTROL.search(unquote_to_bytes(scope.get("query_string", b""))):
            return problem(400, "the query holds a control character (e.g. a NUL byte); no parameter value, id "
                                "or cursor contains one")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                return problem(400, "Content-Length is not a number of bytes")
            if int(length) > self.max_body_bytes:
                return problem(413, f"the request body ({int(length)} bytes) is larger than this server's "
                                    f"limit of {self.max_body_bytes} bytes")
        has_body = (length is not None and int(length) > 0) or "transfer-encoding" in headers
        if scope.get("method") in BODY_METHODS and has_body and scope.get("path", "").startswith("/v1/"):
            ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if not JSON_TYPE.match(ctype):
                return problem(415, f"the body must be JSON (Content-Type: application/json), not "
                                    f"{ctype[:80] or 'unlabelled'}")
        return None
