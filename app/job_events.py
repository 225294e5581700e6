"""Wakes the API's event streams when a worker says their job changed (``worker.notify``).

One subscriber per API process (``app.state.job_events``): one daemon thread
holding one Redis pub/sub connection, however many streams are open. A stream
registers the job it follows (``watch``) for as long as it runs and waits on
its ``Watch`` with its poll interval as the timeout, so polling stays the
safety net: without Redis (the embedded setup), while Redis is down or the
subscriber reconnects, a stream sees a change at its next poll instead.

A thread rather than an asyncio task: the streams may run on different event
loops (Starlette's TestClient starts one per request), and a thread wakes
each through its own loop (``call_soon_threadsafe``).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from worker.notify import channel

log = logging.getLogger("rguide.api")

RECONNECT_MAX_SECONDS = 30.0


class Watch:
    """One stream's interest in one job. ``clear()`` before reading the row, then ``wait()``:
    a notification that arrives in between is not lost, ``wait`` returns at once."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def clear(self) -> None:
        self._event.clear()

    def set_threadsafe(self) -> None:
        with contextlib.suppress(RuntimeError):  # the stream's loop already closed
            self.loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        """True when notified, False after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False


class JobEvents:
    def __init__(self, redis_url: str, queue: str):
        self.redis_url, self.channel = redis_url, channel(queue)
        self._watches: dict[str, set[Watch]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()  # subscribed now (tests wait on it)

    @contextlib.contextmanager
    def watch(self, job_id: str):
        """Register a ``Watch`` on ``job_id`` for the duration of the ``with``; starts the thread on first use."""
        w = Watch()
        with self._lock:
            self._watches.setdefault(job_id, set()).add(w)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="rguide-job-events", daemon=True)
                self._thread.start()
        try:
            yield w
        finally:
            with self._lock:
                waiting = self._watches.get(job_id)
                if waiting is not None:
                    waiting.discard(w)
                    if not waiting:
                        del self._watches[job_id]

    def watching(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._watches.values())

    def _wake(self, job_id: str) -> None:
        with self._lock:
            waiting = list(self._watches.get(job_id, ()))
        for w in waiting:
            w.set_threadsafe()

    def _wake_all(self) -> None:
        # After a (re)subscription: a change may have been published while we were not listening.
        with self._lock:
            waiting = [w for ws in self._watches.values() for w in ws]
        for w in waiting:
            w.set_threadsafe()

    def _run(self) -> None:
        import redis

        delay, warned = 0.5, False
        while not self._stop.is_set():
            client = pubsub = None
            try:
                client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2.0, health_check_interval=30)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self.connected.set()
                self._wake_all()
                delay, warned = 0.5, False
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        self._wake(data.decode() if isinstance(data, bytes) else str(data))
            except Exception as exc:
                self.connected.clear()
                if not warned:
                    log.warning("job-change notifications unavailable (%s: %s); event streams poll the database "
                                "until Redis is back", type(exc).__name__, exc)
                    warned = True
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
            finally:
                for closable in (pubsub, client):
                    if closable is not None:
                        with contextlib.suppress(Exception):
                            closable.close()
        self.connected.clear()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)


def for_settings(settings) -> JobEvents | None:
    """The subscriber for an API process, or None without ``REDIS_URL`` (streams only poll)."""
    return JobEvents(settings.redis_url, settings.queue) if settings.redis_url else None
