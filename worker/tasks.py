"""Celery entry points: ``celery -A worker.tasks:app worker`` (``rguide worker`` does this).

The module-level ``app`` is built from the environment (``worker.config``).
Besides the task, the worker process keeps a row in ``service_workers``
fresh (``/readyz`` counts live workers) and can preload presets so the first
request does not pay for loading the model.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

from celery.signals import worker_process_init, worker_ready, worker_shutdown

from worker.celery_app import make_celery
from worker.config import Settings, WorkerProcess
from worker.job_kinds import KINDS

log = logging.getLogger("rguide.worker")

settings = Settings.from_env()
app = make_celery(settings)


def _task(kind):
    def run(job_id: str) -> str:
        return kind.run(settings, str(job_id))

    run.__name__ = run.__qualname__ = kind.key
    run.__doc__ = kind.summary
    # Acknowledged when finished and rejected if the worker dies: the broker keeps the message until a worker
    # has run the job (the job row and the reaper guard against running it twice).
    return app.task(name=kind.task, acks_late=True, reject_on_worker_lost=True, ignore_result=True)(run)


# One task per job kind (worker.job_kinds), by its key: TASKS["generation"].delay(job_id).
TASKS = {kind.key: _task(kind) for kind in KINDS}


# -- worker presence and preloading -------------------------------------------------------

class _Presence(threading.Thread):
    def __init__(self, name: str, info: dict):
        super().__init__(name="rguide-presence", daemon=True)
        self.worker_name, self.info = name, info
        self._stop_event = threading.Event()

    def beat(self) -> None:
        from worker.presence import touch_worker

        touch_worker(settings, self.worker_name, self.info)

    def run(self) -> None:
        while not self._stop_event.wait(settings.heartbeat_seconds):
            try:
                self.beat()
            except Exception:
                log.exception("could not record this worker's heartbeat")

    def stop(self) -> None:
        from worker.presence import remove_worker

        self._stop_event.set()
        try:
            remove_worker(settings, self.worker_name)
        except Exception:
            log.exception("could not remove this worker's row from service_workers")


_presence: _Presence | None = None


def preload() -> list[str]:
    """Load the presets named in $RGUIDE_WORKER_PRELOAD (comma-separated) into this process."""
    names = list(WorkerProcess.from_env().preload)
    if not names:
        return []
    from model_core.pipeline import get_pipeline

    for name in names:
        log.info("loading preset %s", name)
        get_pipeline(name)
    return names


@worker_process_init.connect
def _pool_process_started(**_kwargs) -> None:
    # Sent in each process that runs tasks: every prefork child, and the
    # worker itself with the solo pool. A forked child must not reuse the
    # parent's pooled DB connections.
    from worker.db import dispose_engines

    dispose_engines()
    threads = WorkerProcess.from_env().torch_threads
    if threads:
        import torch

        torch.set_num_threads(threads)
    preload()


@worker_ready.connect
def _worker_ready(sender=None, **_kwargs) -> None:
    global _presence
    hostname = getattr(sender, "hostname", None) or socket.gethostname()
    name = f"{hostname}:{os.getpid()}"[:128]
    _presence = _Presence(name, WorkerProcess.from_env().describe())
    _presence.beat()
    _presence.start()
    log.info("worker %s ready on queue %s (%s)", name, settings.queue, settings.describe()["broker"])


@worker_shutdown.connect
def _worker_shutdown(**_kwargs) -> None:
    if _presence is not None:
        _presence.stop()
