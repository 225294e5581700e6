"""Job-change notifications: "job X's row changed", sent after the write commits.

The database stays the source of truth; a notification only tells whoever
follows job X (the API's event streams, ``app.job_events``) to read the row
now instead of at its next poll. Two ways, chosen by the settings:

* ``REDIS_URL`` set: Redis pub/sub on the service's channel (``channel``),
  across machines.
* otherwise (the embedded setup: SQLite, the filesystem broker, one
  machine): one datagram to each API process's Unix socket in
  ``<data dir>/events/`` (``socket_dir``). A socket whose process is gone
  refuses the datagram and is removed.

Best effort either way: a notification that is lost (Redis down, a subscriber
reconnecting, a full socket buffer, no Unix sockets on the platform, a data
directory path too long to bind a socket in) costs the follower one poll
interval, never a missed state. So a failure here is logged and swallowed,
never raised into the job.

Torch-free and Celery-free, like ``worker.jobs``.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
from pathlib import Path

from worker.config import Settings

log = logging.getLogger("rguide.notify")

# After a failed publish to Redis, stay quiet this long: a Redis that is down must
# not cost every progress write of a sampling job a connection timeout.
RETRY_AFTER_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 0.5
SOCKET_SUFFIX = ".sock"


def channel(queue: str) -> str:
    """The pub/sub channel of one service (its queue name keeps side-by-side services apart)."""
    return f"rguide:{queue}:job-changed"


def socket_dir(settings: Settings) -> Path:
    """Where API processes without Redis bind their notification sockets."""
    return settings.data_dir / "events"


def unix_sockets_available() -> bool:
    return hasattr(socket, "AF_UNIX") and hasattr(socket, "SOCK_DGRAM")


class Publisher:
    """Publishes job ids to the service's followers; one per process and settings (``publisher``)."""

    def __init__(self, redis_url: str | None, queue: str, sockets: Path | None):
        self.channel = channel(queue)
        self.sockets = None
        self._redis = self._sock = None
        if redis_url:
            import redis

            # redis-py's client is thread-safe (a connection pool): the progress writer
            # and the task's own thread may publish at once.
            self._redis = redis.Redis.from_url(redis_url, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                               socket_timeout=CONNECT_TIMEOUT_SECONDS)
        elif sockets is not None and unix_sockets_available():
            self.sockets = sockets
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)  # a follower's full buffer drops the datagram, never waits
        self._quiet_until = 0.0
        self._warned = False
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._redis is not None or self._sock is not None

    def publish(self, job_ids) -> None:
        """Tell followers these jobs changed. Never raises."""
        if not job_ids:
            return
        if self._redis is not None:
            self._publish_redis(job_ids)
        elif self._sock is not None:
            self._publish_sockets(job_ids)

    def _publish_redis(self, job_ids) -> None:
        if time.monotonic() < self._quiet_until:
            return
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.publish(self.channel, job_id)
                pipe.execute()
        except Exception as exc:
            with self._lock:
                self._quiet_until = time.monotonic() + RETRY_AFTER_SECONDS
                first, self._warned = not self._warned, True
            (log.warning if first else log.debug)(
                "could not publish job-change notifications (%s: %s); followers fall back to polling",
                type(exc).__name__, exc)

    def _publish_sockets(self, job_ids) -> None:
        try:
            entries = [e.path for e in os.scandir(self.sockets) if e.name.endswith(SOCKET_SUFFIX)]
        except OSError:  # no API process has bound one yet
            return
        for path in entries:
            for job_id in job_ids:
                try:
                    self._sock.sendto(job_id.encode(), path)
                except (ConnectionRefusedError, FileNotFoundError):
                    # Nobody reads it any more: an API process that was killed left it behind.
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                    break
                except OSError:  # a full buffer (BlockingIOError) or any other: that follower polls
                    break


@functools.lru_cache(maxsize=16)
def _publisher(redis_url: str | None, queue: str, sockets: Path | None) -> Publisher:
    return Publisher(redis_url, queue, sockets)


def publisher(settings: Settings) -> Publisher:
    """This process's publisher for ``settings``."""
    return _publisher(settings.redis_url, settings.queue, None if settings.redis_url else socket_dir(settings))


def job_changed(settings: Settings, job_ids) -> None:
    """Call after committing a change to these jobs' rows (progress, status). Never raises."""
    publisher(settings).publish(list(job_ids))
