"""The Celery app, built from ``Settings`` (so tests can run many side by side).

Tasks carry a job id and nothing else; the job row says what to sample and
receives the result. No result backend: the database holds results.
"""
from __future__ import annotations

import logging

from celery import Celery

from worker.config import Settings
from worker.job_kinds import BY_KEY, KINDS

# The task of each job kind (worker.job_kinds), by the names the enqueuing code uses.
TASK_NAME = BY_KEY["generation"].task
ANALYSIS_TASK_NAME = BY_KEY["analysis"].task
EVALUATION_TASK_NAME = BY_KEY["evaluation_shard"].task
CLASSIFICATION_TASK_NAME = BY_KEY["classification"].task
MACHINE_VOTES_TASK_NAME = BY_KEY["machine_votes"].task
ROBUSTNESS_TASK_NAME = BY_KEY["robustness_report"].task
# Every task the workers run; all share the service's one queue.
TASK_NAMES = tuple(kind.task for kind in KINDS)
log = logging.getLogger("rguide.enqueue")


def make_celery(settings: Settings) -> Celery:
    app = Celery("rguide", broker=settings.broker_url, set_as_current=False)
    if settings.uses_filesystem_broker:
        settings.ensure_dirs()
        folders = settings.broker_folders()
        transport = {
            # One folder for both directions: producers (API) and consumers
            # (workers) are different processes sharing it.
            "data_folder_in": str(folders["queue"]), "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]), "store_processed": False,
            "control_folder": str(folders["control"]), "polling_interval": settings.broker_poll_seconds,
        }
    else:
        # Redis re-delivers an unacknowledged message after this long. The
        # reaper recovers lost jobs much sooner through the job's lease, so
        # this only needs to exceed the longest job.
        transport = {"visibility_timeout": 6 * 3600}
    app.conf.update(
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue,
        task_routes={name: {"queue": settings.queue} for name in TASK_NAMES},
        # A task is acknowledged when it finishes, not when it starts: if the
        # worker dies, the broker still has it. One task reserved at a time,
        # so a busy worker never sits on jobs another worker could run.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_publish_retry=True,
        # Fail fast when the broker is down: the job is already in the DB and
        # the reaper sends it once the broker is back.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        broker_connection_timeout=3,
        # The filesystem broker has no cheap broadcast; cancel goes through the DB anyway.
        worker_enable_remote_control=not settings.uses_filesystem_broker,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    app.rguide_settings = settings
    return app


class Enqueuer:
    """Sends job ids to the broker from the API process (or the reaper)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._app: Celery | None = None

    @property
    def app(self) -> Celery:
        if self._app is None:
            self._app = make_celery(self.settings)
        return self._app

    def send(self, job_ids: list[str], task: str = TASK_NAME) -> list[str]:
        """Send each id as ``task``; return those the broker accepted. Failures are logged, not raised."""
        sent = []
        for job_id in job_ids:
            try:
                self.app.send_task(task, args=[job_id], queue=self.settings.queue)
            except Exception as exc:  # broker down: the reaper will send it later
                log.warning("could not send job %s to the broker (%s: %s); the reaper will retry",
                            job_id, type(exc).__name__, exc)
                continue
            sent.append(job_id)
        return sent

    def pending(self) -> int | None:
        """Messages waiting in our queue (not counting those workers hold), or None if the broker cannot say."""
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1)
                return int(conn.default_channel.queue_declare(self.settings.queue, passive=True).message_count)
        except Exception:
            return None

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None
