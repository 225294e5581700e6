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

from worker.celery_app import (ANALYSIS_TASK_NAME, CLASSIFICATION_TASK_NAME, EVALUATION_TASK_NAME,
                               MACHINE_VOTES_TASK_NAME, ROBUSTNESS_TASK_NAME, TASK_NAME, make_celery)
from worker.config import Settings, WorkerProcess

log = logging.getLogger("rguide.worker")

settings = Settings.from_env()
app = make_celery(settings)


@app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def generate(job_id: str) -> str:
    """Run generation job ``job_id``; the job row holds everything else."""
    from worker.runner import run_job

    return run_job(settings, str(job_id))


@app.task(name=ANALYSIS_TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def analyze(job_id: str) -> str:
    """Run analysis job ``job_id`` (gradient maps, class maximisation, ...); the row holds its settings."""
    from worker.analysis_runner import run_analysis_job

    return run_analysis_job(settings, str(job_id))


@app.task(name=EVALUATION_TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def evaluate_shard(shard_id: str) -> str:
    """Run evaluation shard ``shard_id`` (its images, their features; the row's merge when it is the last)."""
    from worker.evaluation_runner import run_shard_job

    return run_shard_job(settings, str(shard_id))


@app.task(name=CLASSIFICATION_TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def classify(job_id: str) -> str:
    """Run classification job ``job_id`` (diffusion classifier or a classifier at t = 0)."""
    from worker.classification_runner import run_classification_job

    return run_classification_job(settings, str(job_id))


@app.task(name=MACHINE_VOTES_TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def machine_votes(job_id: str) -> str:
    """Run machine-vote job ``job_id``: the machine judge answers a study's pairs (docs/pilot.md)."""
    from worker.machine_vote_runner import run_machine_vote_job

    return run_machine_vote_job(settings, str(job_id))


@app.task(name=ROBUSTNESS_TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def robustness_report(job_id: str) -> str:
    """Run robustness-report job ``job_id`` (a preset's defences under attack); the row holds its settings."""
    from worker.robustness_runner import run_robustness_job

    return run_robustness_job(settings, str(job_id))


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
