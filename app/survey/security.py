"""Signed cookies and CSRF tokens for raters and researchers.

Raters: each study has its own random ``secret`` (in the database, so every
API process and machine agrees without shared configuration). A rater's
browser holds a random *browser id* in a cookie signed with it; the CSRF
token on every form is another HMAC of that id. A forged, altered or
foreign cookie fails the signature check and counts as no cookie.

Researchers: browsers cannot send an ``Authorization`` header from a link, so
the researcher pages sign the researcher in with their API key once and keep
a session cookie ``<key id>.<expiry>.<mac>``. The MAC is keyed with the
server's secret (``Settings.session_secret``: ``RGUIDE_SECRET_KEY``, or a
file in the data folder), never with anything stored in the database, so a
reader of the database cannot mint a session; it covers the key's stored
hash too, so a session ends when its key is revoked or replaced.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

RATER_COOKIE = "rg_rater"
RESEARCHER_COOKIE = "rg_researcher"
RESEARCHER_SESSION_SECONDS = 12 * 3600


def new_secret() -> str:
    return secrets.token_hex(32)


def new_browser_id() -> str:
    return secrets.token_urlsafe(18)


def _mac(key: str, message: str) -> str:
    digest = hmac.new(key.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _equal(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


# -- raters -------------------------------------------------------------------------

def sign_browser_id(secret: str, browser_id: str) -> str:
    return f"{browser_id}.{_mac(secret, 'rater|' + browser_id)}"


def read_browser_id(secret: str, cookie: str | None) -> str | None:
    """The browser id in a cookie this study signed, else None."""
    if not cookie or "." not in cookie or len(cookie) > 200:
        return None
    browser_id, mac = cookie.rsplit(".", 1)
    return browser_id if browser_id and _equal(mac, _mac(secret, "rater|" + browser_id)) else None


def csrf_token(secret: str, browser_id: str) -> str:
    return _mac(secret, "csrf|" + browser_id)


def csrf_problem(secret: str, browser_id: str | None, token: str | None) -> str | None:
    """Why a form's CSRF token is refused, or None when it is good."""
    if not token:
        return "the form carries no CSRF token; reload the page and answer again"
    if browser_id is None:
        return "your survey session cookie is missing or invalid (are cookies blocked?); open the study link again"
    if not _equal(token, csrf_token(secret, browser_id)):
        return "the form's CSRF token does not match your session; reload the page and answer again"
    return None


# -- researchers ----------------------------------------------------------------------

def researcher_session(secret: str, key_id: str, key_hash: str, now: float | None = None) -> str:
    expires = int((now or time.time()) + RESEARCHER_SESSION_SECONDS)
    return f"{key_id}.{expires}.{_mac(secret, f'researcher|{key_id}|{key_hash}|{expires}')}"


def parse_researcher_session(cookie: str | None) -> tuple[str, int, str] | None:
    """(key id, expiry, mac) from a well-formed cookie; the MAC is checked by :func:`session_valid`."""
    if not cookie or len(cookie) > 300:
        return None
    parts = cookie.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2]


def session_valid(secret: str, key_id: str, expires: int, mac: str, key_hash: str,
                  now: float | None = None) -> bool:
    if expires < (now or time.time()):
        return False
    return _equal(mac, _mac(secret, f"researcher|{key_id}|{key_hash}|{expires}"))


def researcher_csrf(secret: str, cookie: str) -> str:
    return _mac(secret, "researcher-csrf|" + cookie)


def researcher_csrf_ok(secret: str, cookie: str, token: str | None) -> bool:
    return _equal(token, researcher_csrf(secret, cookie))
