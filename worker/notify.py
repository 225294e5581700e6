"""Job-change notifications: "job X's row changed", sent after the write commits.

The database stays the source of truth; a notification only tells whoever
follows job X (the API's event stream, ``app.job_events``) to read the row
now instead of at its next poll. It is best effort: sent over Redis pub/sub
when ``REDIS_URL`` is set, not at all otherwise (the embedded SQLite setup),
and a notification that is lost (Redis down, a subscriber reconnecting)
costs the follower one poll interval, never a missed state. So a failure
here is logged and swallowed, never raised into the job.

Torch-free and Celery-free, like ``worker.jobs``.
"""
from __future__ import annotations

import functools
import logging
import threading
import time

from worker.config import Settings

log = logging.getLogger("rguide.notify")

# After a failed publish, stay quiet this long: a Redis that is down must not
# cost every progress write of a sampling job a connection timeout.
RETRY_AFTER_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 0.5


def channel(queue: str) -> str:
    """The pub/sub channel of one service (its queue name keeps side-by-side services apart)."""
    return f"rguide:{queue}:job-changed"


class Publisher:
    """Publishes job ids on the service's channel; one per process and Redis URL (``publisher``)."""

    def __init__(self, redis_url: str | None, queue: str):
        self.channel = channel(queue)
        self._redis = None
        if redis_url:
            import redis

            # redis-py's client is thread-safe (a connection pool): the sampling
            # callback and the lease thread may publish at once.
            self._redis = redis.Redis.from_url(redis_url, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                               socket_timeout=CONNECT_TIMEOUT_SECONDS)
        self._quiet_until = 0.0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    def publish(self, job_ids) -> None:
        """Tell followers these jobs changed. Never raises."""
        if self._redis is None or not job_ids or time.monotonic() < self._quiet_until:
            return
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.publish(self.channel, job_id)
                pipe.execute()
        except Exception as exc:
            with self._lock:
                first = self._quiet_until == 0.0
                self._quiet_until = time.monotonic() + RETRY_AFTER_SECONDS
            (log.warning if first else log.debug)(
                "could not publish job-change notifications (%s: %s); followers fall back to polling",
                type(exc).__name__, exc)


@functools.lru_cache(maxsize=16)
def _publisher(redis_url: str | None, queue: str) -> Publisher:
    return Publisher(redis_url, queue)


def publisher(settings: Settings) -> Publisher:
    """This process's publisher for ``settings`` (a no-op one without ``REDIS_URL``)."""
    return _publisher(settings.redis_url, settings.queue)


def job_changed(settings: Settings, job_ids) -> None:
    """Call after committing a change to these jobs' rows (progress, status). Never raises."""
    publisher(settings).publish(list(job_ids))
