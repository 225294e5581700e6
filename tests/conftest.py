"""Shared fixtures: real Redis and PostgreSQL, a fresh database per service,
and real Celery worker processes.

Services are expected on 127.0.0.1 (Redis :6379, PostgreSQL :5432 with trust
auth; ``.ci/run`` starts them). Override with ``RGUIDE_TEST_REDIS_URL`` and
``RGUIDE_TEST_POSTGRES_URL`` (a database we may connect to in order to
create and drop others). When a service is unreachable, tests that need it
are skipped, or fail when ``RGUIDE_REQUIRE_SERVICES=1`` (CI sets it), so a
broken CI machine cannot pass by skipping.

Every ``ServiceEnv`` gets its own PostgreSQL database, Celery queue and
media directory, so parallel test runs (and tests within a run) never see
each other's jobs. All are dropped at the end of the session.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REQUIRE_SERVICES = os.environ.get("RGUIDE_REQUIRE_SERVICES") == "1"
TERMINAL = ("succeeded", "failed", "canceled")


def pytest_configure(config):
    # Starlette's TestClient announces a move to httpx2; nothing for this project to fix.
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with `starlette.testclient`")


def service_unavailable(what: str) -> None:
    """Skip, or fail under RGUIDE_REQUIRE_SERVICES=1."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} (RGUIDE_REQUIRE_SERVICES=1: integration tests must not skip)", pytrace=False)
    pytest.skip(what)


# -- Redis ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("RGUIDE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except Exception as exc:
        service_unavailable(f"Redis is not reachable at {url}: {type(exc).__name__}: {exc}")
    return url


# -- PostgreSQL -------------------------------------------------------------------------------

class PostgresServer:
    """Creates throw-away databases next to an existing one; drops them at the end."""

    def __init__(self, admin_url: str):
        import psycopg
        from sqlalchemy.engine import make_url

        self.url = make_url(admin_url.replace("postgresql+psycopg://", "postgresql://"))
        self.conn = psycopg.connect(self.url.render_as_string(hide_password=False), autocommit=True,
                                    connect_timeout=3)
        self.created: list[str] = []
        self.prefix = f"rguide_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    def new_database(self) -> str:
        name = f"{self.prefix}_{len(self.created)}"
        self.conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        from worker.db import dispose_engines

        dispose_engines()
        for name in self.created:
            self.conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.conn.close()


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    candidates = [os.environ["RGUIDE_TEST_POSTGRES_URL"]] if os.environ.get("RGUIDE_TEST_POSTGRES_URL") else [
        "postgresql://root@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test",
        "postgresql://postgres@127.0.0.1:5432/postgres"]
    errors = []
    for url in candidates:
        try:
            server = PostgresServer(url)
            server.conn.execute("SELECT 1")
            break
        except Exception as exc:
            errors.append(f"{url}: {type(exc).__name__}: {exc}".strip())
    else:
        service_unavailable("PostgreSQL is not reachable: " + " | ".join(errors))
    yield server
    server.drop_all()


# -- a service environment: settings + worker processes -----------------------------------------

@contextlib.contextmanager
def sqlite_api(tmp: Path, **overrides):
    """The API in-process (TestClient) on SQLite and the filesystem broker, no reaper, no workers."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from worker import db

    settings = make_settings(tmp, **{"database_url": f"sqlite:///{tmp / 'api.db'}",
                                     "broker_url": "filesystem://localhost/", "redis_url": None, **overrides})
    with TestClient(create_app(settings, run_reaper=False)) as client:
        client.settings = settings
        yield client
    db.dispose_engines()


def count_jobs(client) -> int:
    from sqlalchemy import func, select

    from worker.models import Job

    with client.app.state.sessions() as s:
        return s.scalar(select(func.count()).select_from(Job))


def make_settings(tmp: Path, **overrides):
    from worker.config import Settings

    values = dict(data_dir=tmp, media_dir=tmp / "media", queue=f"rguide.test.{uuid.uuid4().hex[:10]}",
                  lease_seconds=3.0, heartbeat_seconds=0.5, requeue_after_seconds=60.0,
                  reaper_interval_seconds=0.0, rate_limit=0, worker_stale_seconds=10.0,
                  progress_interval_seconds=0.1, broker_poll_seconds=0.05)
    values.update(overrides)
    return Settings.from_env({}, **values)


class WorkerProcess:
    """``rguide worker`` as a separate process, exactly as a user starts it."""

    def __init__(self, settings, name: str, log_dir: Path, preload: str = "tiny"):
        self.settings, self.name = settings, name
        self.log_path = log_dir / f"worker-{name}.log"
        env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
        # One torch thread: the test machine's cores are shared with the test process itself.
        cmd = [sys.executable, "-m", "rguide", "worker", "--name", f"{name}@%h", "--preload", preload,
               "--threads", "1"]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout: float = 90.0) -> "WorkerProcess":
        """Until the worker has loaded its preset and announced itself in service_workers."""
        from sqlalchemy import select

        from worker.db import session_factory
        from worker.models import WorkerHeartbeat

        Session = session_factory(self.settings.database_url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with Session() as s:
                names = s.scalars(select(WorkerHeartbeat.name)).all()
            if any(n.startswith(f"{self.name}@") for n in names):
                return self
            time.sleep(0.2)
        raise AssertionError(f"worker {self.name} not ready after {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no ack, no cleanup. The solo pool runs tasks in this very process."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@dataclass
class ServiceEnv:
    settings: object
    log_dir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self, name: str | None = None, wait: bool = True) -> WorkerProcess:
        w = WorkerProcess(self.settings, name or f"w{len(self.workers)}-{uuid.uuid4().hex[:6]}", self.log_dir)
        self.workers.append(w)
        return w.wait_ready() if wait else w

    def client(self):
        from fastapi.testclient import TestClient

        from app.main import create_app

        return TestClient(create_app(self.settings, run_reaper=False))

    def session(self):
        from worker.db import session_factory

        return session_factory(self.settings.database_url)()

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        if self.settings.redis_url:
            try:
                import redis

                r = redis.Redis.from_url(self.settings.redis_url)
                keys = list(r.scan_iter(f"*{self.settings.queue}*"))
                if keys:
                    r.delete(*keys)
            except Exception:
                pass


@pytest.fixture(scope="session")
def service_factory(tmp_path_factory, postgres, redis_url):
    """Builds isolated PostgreSQL + Redis service environments (migrated, no workers yet)."""
    from worker import db

    envs: list[ServiceEnv] = []

    def build(**overrides) -> ServiceEnv:
        tmp = tmp_path_factory.mktemp("service")
        url = postgres.new_database()
        settings = make_settings(tmp, database_url=url, redis_url=redis_url, broker_url=redis_url, **overrides)
        settings.ensure_dirs()
        db.upgrade(url)
        env = ServiceEnv(settings, tmp)
        envs.append(env)
        return env

    yield build
    for env in envs:
        env.close()


@pytest.fixture(scope="module")
def pg_service(service_factory):
    """One PostgreSQL + Redis environment with one live worker, shared by a test module."""
    env = service_factory()
    env.start_worker("shared")
    return env


def wait_for(client, job_id: str, statuses=TERMINAL, timeout: float = 120.0, poll: float = 0.1) -> dict:
    """GET the job until its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    body = None
    while time.monotonic() < deadline:
        r = client.get(f"/v1/generations/{job_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in statuses:
            return body
        time.sleep(poll)
    raise AssertionError(f"job {job_id} still {body and body['status']} after {timeout} s: {body}")


def wait_for_http(base_url: str, path: str, proc, log: Path, timeout: float = 180.0):
    """Poll ``base_url + path`` until it answers 200, failing with the log's tail if ``proc`` exits first."""
    import httpx

    deadline, answer = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            answer = httpx.get(base_url + path, timeout=10)
            if answer.status_code == 200:
                return answer
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{base_url}{path} did not answer 200 in {timeout:.0f} s (last: "
                f"{answer.status_code if answer is not None else 'no answer'}); log:\n"
                f"{log.read_text(errors='replace')[-3000:]}", pytrace=False)


def wait_until(predicate, timeout: float = 30.0, poll: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="session", autouse=True)
def _reference_store(tmp_path_factory):
    """Real-image reference statistics go to a temporary store, not the user's ~/.cache (issue 18)."""
    if "RGUIDE_REFERENCE_DIR" not in os.environ:
        os.environ["RGUIDE_REFERENCE_DIR"] = str(tmp_path_factory.mktemp("reference"))
    yield
