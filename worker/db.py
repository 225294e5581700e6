"""The SQL store shared by the API and the workers: engine, sessions, migrations.

``Base`` is the one declarative base of the project. It lives here, not in
``app``, because the workers write job rows and dependencies point one way
(app -> worker -> model_core). Tables defined in ``app`` (API keys, surveys)
use this same ``Base`` so that Alembic sees one metadata.

The schema changes only through Alembic (``migrations/``); ``upgrade()`` runs
the migrations and is called by every process on start, under a lock so that
an API and a worker starting together do not race.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import threading
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Iterator

from sqlalchemy import DateTime, MetaData, create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

# worker/migrations ships in the wheel; in the source tree it is a link to the
# top-level migrations/ that alembic.ini points at.
MIGRATIONS_DIR = Path(str(resources.files("worker") / "migrations"))
log = logging.getLogger("rguide.db")

# Stable constraint names, so migrations can refer to (and drop) them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in Python, naive UTC in the column.

    SQLite has no time zones; storing naive UTC on both backends keeps
    ordering and comparisons identical on SQLite and PostgreSQL.
    """

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use worker.db.utcnow()")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    # WAL lets the API read while a worker writes; busy_timeout makes writers
    # wait for each other instead of failing with "database is locked".
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def get_engine(url: str) -> Engine:
    """One engine per URL per process (engines own connection pools)."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                path = url.split("///", 1)[-1]
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Close pooled connections (after fork, and at test teardown)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextlib.contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str):
    """Alembic's configuration built here, not read from alembic.ini (which an installed
    package does not have); the same settings as alembic.ini, for the packaged migrations."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    cfg.set_main_option("path_separator", "os")
    # Percent signs in passwords would be read as interpolation by configparser.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


@contextlib.contextmanager
def _migration_lock(url: str) -> Iterator[None]:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if not path or path == ":memory:":
            yield
            return
        lock_path = Path(path + ".migrate.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    engine = get_engine(url)
    with engine.connect() as conn:
        # A session-level advisory lock: other processes wait here until the
        # first one has brought the schema to head.
        conn.execute(text("SELECT pg_advisory_lock(724871)"))
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(724871)"))
            conn.commit()


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database to ``revision`` with Alembic (idempotent)."""
    # Alembic logs every plugin it sets up at INFO; say only what changed.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic import command

    with _migration_lock(url):
        before = current_revision(url)
        command.upgrade(alembic_config(url), revision)
        after = current_revision(url)
    if before != after:
        log.info("database schema upgraded from %s to %s", before or "empty", after)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@functools.lru_cache(maxsize=1)
def head_revision() -> str | None:
    """The newest migration in migrations/ (read once per process: the files do not change under it)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
