"""The reaper: finds jobs that the database says are waiting or running but
that no worker holds, and sends them to the broker again.

``reap_once`` is a plain function (tests call it directly); the API process
runs it every ``RGUIDE_REAPER_INTERVAL_SECONDS`` (see ``app.main``). Several
API processes may run it at once: every change is a guarded UPDATE.
"""
from __future__ import annotations

import logging
import threading

from sqlalchemy import func, select, update

from worker import jobs, notify
from worker.celery_app import Enqueuer
from worker.config import Settings
from worker.db import session_factory
from worker.job_kinds import BY_KEY, KINDS

log = logging.getLogger("rguide.reaper")


# Every job table and the task that runs its jobs (worker.job_kinds); their messages share one broker queue.
TABLES = tuple((kind.model(), kind.task) for kind in KINDS)


def reap_once(settings: Settings, enqueuer: Enqueuer) -> jobs.ReapResult:
    """One round over every job table; returns the generation jobs' result with the analyses' ids appended."""
    Session = session_factory(settings.database_url)
    waiting = enqueuer.pending()
    with Session() as session:
        queued = {model: session.scalar(select(func.count()).select_from(model).where(model.status == "queued")) or 0
                  for model, _ in TABLES}
    total = jobs.ReapResult([], [], [], [])
    for model, task in TABLES:
        with Session() as session:
            result = jobs.reap(session, max_attempts=settings.max_attempts,
                               requeue_after_seconds=settings.requeue_after_seconds,
                               messages_waiting=waiting, model=model,
                               queued_elsewhere=sum(n for m, n in queued.items() if m is not model))
        wanted = result.to_enqueue
        if wanted:
            sent = set(enqueuer.send(wanted, task))
            unsent = [j for j in wanted if j not in sent]
            if unsent:
                # Broker still down: forget the send time so the next round retries at once.
                with Session() as session:
                    session.execute(update(model).where(model.id.in_(unsent), model.status == "queued")
                                    .values(enqueued_at=None))
                    session.commit()
        if task == BY_KEY["generation"].task:  # the only kind with event streams to wake
            notify.job_changed(settings, result.requeued + result.failed + result.canceled)
        for name in ("requeued", "resent", "failed", "canceled"):
            getattr(total, name).extend(getattr(result, name))
    return total


class ReaperThread(threading.Thread):
    """Runs ``reap_once`` every ``interval`` seconds until stopped."""

    def __init__(self, settings: Settings, enqueuer: Enqueuer, interval: float):
        super().__init__(name="rguide-reaper", daemon=True)
        self.settings, self.enqueuer, self.interval = settings, enqueuer, interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                reap_once(self.settings, self.enqueuer)
            except Exception:  # a DB hiccup must not kill the loop
                log.exception("reaper round failed; retrying in %.0f s", self.interval)

    def stop(self) -> None:
        self._stop_event.set()
