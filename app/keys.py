"""Researcher API keys: created once by ``rguide keys create``, stored hashed.

A key is 32 random bytes (``rg_`` + url-safe base64). Only its SHA-256 is
stored: with that much entropy a salted slow hash adds nothing, and a plain
digest lets a request find its key with one indexed lookup. The prefix (the
first characters) is kept in clear so a researcher can tell keys apart.

No FastAPI here: the CLI and the worker-side tooling import this module.
"""
from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime

from sqlalchemy import Boolean, String, false, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from worker.db import Base, UTCDateTime, utcnow

KEY_PREFIX = "rg_"


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # An admin key reads and closes every lab's studies; others only their own and those granted to them.
    is_admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def create_key(session: Session, name: str, *, admin: bool = False) -> tuple[ApiKey, str]:
    """A new key row and the plaintext key, which is never stored and cannot be shown again."""
    name = name.strip()
    if not name:
        raise ValueError("a key needs a non-empty --name (who or what uses it)")
    if len(name) > 255:
        raise ValueError("--name is longer than 255 characters")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=uuid.uuid4().hex, name=name, prefix=plaintext[:10], key_hash=hash_key(plaintext),
                 is_admin=bool(admin))
    session.add(key)
    session.flush()
    return key, plaintext


def find_key(session: Session, plaintext: str) -> ApiKey | None:
    """The active key with this plaintext, or None."""
    if not plaintext or len(plaintext) > 200:
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext)))
    if key is None or not key.active:
        return None
    return key


def lookup_key(session: Session, key_id_or_prefix: str) -> ApiKey:
    """The one key with this id or prefix (as ``rguide keys list`` shows them)."""
    matches = session.scalars(select(ApiKey).where(
        (ApiKey.id == key_id_or_prefix) | (ApiKey.prefix == key_id_or_prefix))).all()
    if not matches:
        raise ValueError(f"no API key with id or prefix {key_id_or_prefix!r}")
    if len(matches) > 1:
        raise ValueError(f"{key_id_or_prefix!r} matches {len(matches)} keys; give the key id")
    return matches[0]


def revoke_key(session: Session, key_id_or_prefix: str) -> ApiKey:
    key = lookup_key(session, key_id_or_prefix)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))
