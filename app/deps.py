"""FastAPI dependencies shared by every router (the survey's included).

``get_db`` yields a SQLAlchemy session on the service database; the session
is closed after the response. Routers commit explicitly.
"""
from __future__ import annotations

from typing import Iterator

from fastapi import Request
from sqlalchemy.orm import Session

from worker.config import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    session = request.app.state.sessions()
    try:
        yield session
    finally:
        session.close()
