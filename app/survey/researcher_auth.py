"""Who may see and run studies: a researcher API key, sent as a header or held as a signed session cookie.

The API takes the key as for every researcher endpoint (``app.auth``). The
researcher pages sign in once with the key and then rely on a session
cookie (``app.survey.security``), which the read-only API endpoints (status,
manifest, votes, results, report) also accept, so the links on the
researcher page work in a browser. Endpoints that change something accept
the cookie only together with a CSRF token in the form.
"""
from __future__ import annotations

from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from app.auth import optional_api_key
from app.deps import get_db
from app.keys import ApiKey
from app.survey import security

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def login_redirect(request: Request) -> RedirectResponse:
    """The sign-in page, coming back to this page after it."""
    return RedirectResponse(f"/researcher/login?next={quote(request.url.path)}", status_code=303)


def session_key(request: Request, session: Session) -> ApiKey | None:
    """The API key behind a valid researcher session cookie, else None."""
    cookie = request.cookies.get(security.RESEARCHER_COOKIE)
    parsed = security.parse_researcher_session(cookie)
    if parsed is None:
        return None
    key_id, expires, mac = parsed
    key = session.get(ApiKey, key_id)
    secret = request.app.state.session_secret
    if key is None or not key.active or not security.session_valid(secret, key_id, expires, mac, key.key_hash):
        return None
    return key


def researcher(request: Request, key: ApiKey | None = Depends(optional_api_key),
               session: Session = Depends(get_db)) -> ApiKey:
    """For read-only researcher endpoints: an API key header, or a signed-in researcher's cookie."""
    if key is not None:
        return key
    key = session_key(request, session)
    if key is None:
        raise HTTPException(401, "this endpoint needs a researcher API key: send 'Authorization: Bearer <key>', "
                                 "or sign in at /researcher/login", headers=_CHALLENGE)
    return key
