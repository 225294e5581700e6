"""API-key authentication and the per-key rate limit, as FastAPI dependencies.

Researchers send their key as ``Authorization: Bearer rg_...`` or
``X-API-Key: rg_...``. Use ``Depends(require_api_key)`` on any endpoint that
creates surveys or exports data; it returns the ``ApiKey`` row. Generation
is open unless ``RGUIDE_REQUIRE_KEY_FOR_GENERATION=1``
(``generation_access``); either way, creating generations is rate limited
per key, or per client address for anonymous callers.
"""
from __future__ import annotations

from datetime import timedelta

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.deps import get_db
from app.keys import ApiKey, find_key
from worker.db import utcnow

bearer_scheme = HTTPBearer(auto_error=False, scheme_name="BearerKey",
                           description="a researcher API key (rguide keys create --name NAME)")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="HeaderKey",
                             description="the same key, in a header")

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _presented(bearer: HTTPAuthorizationCredentials | None, header: str | None) -> str | None:
    if bearer is not None and bearer.credentials:
        return bearer.credentials.strip()
    if header:
        return header.strip()
    return None


def _lookup(session: Session, plaintext: str) -> ApiKey:
    key = find_key(session, plaintext)
    if key is None:
        raise HTTPException(401, "API key not recognised, or revoked", headers=_CHALLENGE)
    now = utcnow()
    # At most one write a minute per key: a DB write on every request would
    # serialise all authenticated traffic on SQLite.
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
        key.last_used_at = now
        session.commit()
    return key


def optional_api_key(bearer: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
                     header: str | None = Depends(header_scheme),
                     session: Session = Depends(get_db)) -> ApiKey | None:
    """The caller's key if one was sent (a wrong key is still a 401), else None."""
    plaintext = _presented(bearer, header)
    return None if plaintext is None else _lookup(session, plaintext)


def require_api_key(key: ApiKey | None = Depends(optional_api_key)) -> ApiKey:
    """For researcher-only endpoints: 401 unless a valid, unrevoked key is sent."""
    if key is None:
        raise HTTPException(401, "this endpoint needs a researcher API key: send 'Authorization: Bearer <key>' "
                                 "(create one with: rguide keys create --name NAME)", headers=_CHALLENGE)
    return key


def generation_access(request: Request, key: ApiKey | None = Depends(optional_api_key)) -> ApiKey | None:
    """Open access, or a required key when the server is configured so."""
    if key is None and request.app.state.settings.generation_requires_key:
        raise HTTPException(401, "this server requires an API key for generation: send "
                                 "'Authorization: Bearer <key>'", headers=_CHALLENGE)
    return key


def client_identity(request: Request, key: ApiKey | None) -> str:
    """Whom a request counts against: its API key, else its client address.

    The address is the socket's peer unless the server was told to believe a
    proxy (``RGUIDE_TRUSTED_PROXIES``, applied by uvicorn), so a client cannot
    pick its own identity with X-Forwarded-For.
    """
    return f"key:{key.id}" if key is not None else f"ip:{request.client.host if request.client else 'unknown'}"


def _count(request: Request, identity: str) -> None:
    limiter = request.app.state.rate_limiter
    allowed, retry_after = limiter.hit(identity)
    if not allowed:
        raise HTTPException(429, f"rate limit exceeded: at most {limiter.limit} requests per "
                                 f"{limiter.window:g} s; retry in {retry_after} s",
                            headers={"Retry-After": str(retry_after)})


def rate_limited_generation_access(request: Request,
                                   key: ApiKey | None = Depends(generation_access)) -> ApiKey | None:
    _count(request, client_identity(request, key))
    return key


def rate_limited_api_key(request: Request, key: ApiKey = Depends(require_api_key)) -> ApiKey:
    """A researcher key, counted against the same per-key budget as generations (a study queues many jobs)."""
    _count(request, client_identity(request, key))
    return key
