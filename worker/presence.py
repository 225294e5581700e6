"""Which workers are alive: one row per worker process, refreshed by a heartbeat."""
from __future__ import annotations

import os
import socket
from datetime import timedelta

from sqlalchemy import delete, func, select, update

from worker.config import Settings
from worker.db import session_factory, utcnow
from worker.models import WorkerHeartbeat


def touch_worker(settings: Settings, name: str, info: dict | None = None) -> None:
    Session = session_factory(settings.database_url)
    now = utcnow()
    with Session() as s:
        res = s.execute(update(WorkerHeartbeat).where(WorkerHeartbeat.name == name).values(last_seen_at=now))
        if res.rowcount == 0:
            s.add(WorkerHeartbeat(name=name, hostname=socket.gethostname()[:255], pid=os.getpid(),
                                  queue=settings.queue, info=info or {}, started_at=now, last_seen_at=now))
        s.commit()


def remove_worker(settings: Settings, name: str) -> None:
    Session = session_factory(settings.database_url)
    with Session() as s:
        s.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.name == name))
        s.commit()


def live_workers(session, settings: Settings) -> int:
    """Workers on our queue seen within ``worker_stale_seconds``."""
    since = utcnow() - timedelta(seconds=settings.worker_stale_seconds)
    return int(session.scalar(select(func.count()).select_from(WorkerHeartbeat).where(
        WorkerHeartbeat.queue == settings.queue, WorkerHeartbeat.last_seen_at >= since)) or 0)
