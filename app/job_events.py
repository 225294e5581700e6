"""Wakes the API's event streams when a worker says their job changed (``worker.notify``).

One subscriber per API process (``app.state.job_events``): one daemon thread
listening, however many streams are open, on a Redis pub/sub connection when
``REDIS_URL`` is set, otherwise on a Unix datagram socket of its own in the
data directory (the embedded setup, one machine). A stream registers the job
it follows (``watch``) for as long as it runs and waits on its ``Watch`` with
a poll interval as the timeout, so polling stays the safety net: while the
subscriber is not listening (Redis down, reconnecting, no socket could be
bound) a stream sees a change at its next poll instead.

A thread rather than an asyncio task: the streams may run on different event
loops (Starlette's TestClient starts one per request), and a thread wakes
each through its own loop (``call_soon_threadsafe``).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
from pathlib import Path

from worker.notify import SOCKET_SUFFIX, channel, socket_dir, unix_sockets_available

log = logging.getLogger("rguide.api")

RECONNECT_MAX_SECONDS = 30.0
# A Unix socket's path must fit sockaddr_un: 108 bytes on Linux, 104 on macOS, with the final NUL.
MAX_SOCKET_PATH = 103


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
    """The registry of watches and the listening thread; ``_listen`` is the transport."""

    def __init__(self):
        self._watches: dict[str, set[Watch]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()  # listening now: notifications will arrive

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

    def _listening(self) -> None:
        """Called by ``_listen`` once notifications arrive: wake every stream once, since a change
        may have been published while nobody listened."""
        self.connected.set()
        with self._lock:
            waiting = [w for ws in self._watches.values() for w in ws]
        for w in waiting:
            w.set_threadsafe()

    def _run(self) -> None:
        delay, warned = 0.5, False
        while not self._stop.is_set():
            try:
                self._listen()  # returns when stopped
            except Exception as exc:
                self.connected.clear()
                if not warned:
                    log.warning("job-change notifications unavailable (%s: %s); event streams poll the database "
                                "meanwhile", type(exc).__name__, exc)
                    warned = True
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
            else:
                delay, warned = 0.5, False
        self.connected.clear()

    def _listen(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)


class RedisJobEvents(JobEvents):
    def __init__(self, redis_url: str, queue: str):
        super().__init__()
        self.redis_url, self.channel = redis_url, channel(queue)

    def _listen(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2.0, health_check_interval=30)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
            self._listening()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message and message.get("type") == "message":
                    data = message["data"]
                    self._wake(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            self.connected.clear()
            with contextlib.suppress(Exception):
                pubsub.close()
            with contextlib.suppress(Exception):
                client.close()


class SocketJobEvents(JobEvents):
    """A Unix datagram socket ``<data dir>/events/api-<pid>-<nonce>.sock``; removed on close."""

    def __init__(self, directory: Path):
        super().__init__()
        self.directory = directory
        self.path: Path | None = None  # named when bound: the process that listens, not one it forked from

    def longest_path(self) -> Path:
        return self.directory / f"api-{'9' * 10}-{'f' * 8}{SOCKET_SUFFIX}"

    def _listen(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"api-{os.getpid()}-{secrets.token_hex(4)}{SOCKET_SUFFIX}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(self.path))  # OSError when the path is too long for a socket: then we poll
            sock.settimeout(1.0)
            self._listening()
            while not self._stop.is_set():
                try:
                    data = sock.recv(256)
                except socket.timeout:
                    continue
                self._wake(data.decode(errors="replace"))
        finally:
            self.connected.clear()
            sock.close()
            with contextlib.suppress(OSError):
                self.path.unlink()


def for_settings(settings) -> JobEvents | None:
    """The subscriber for an API process: Redis's channel with ``REDIS_URL``, else a socket in the
    data directory; None where neither can work (then streams only poll)."""
    if settings.redis_url:
        return RedisJobEvents(settings.redis_url, settings.queue)
    if unix_sockets_available():
        events = SocketJobEvents(socket_dir(settings))
        if len(os.fsencode(events.longest_path())) <= MAX_SOCKET_PATH:
            return events
        log.info("the data directory's path is too long for a Unix socket (%s): event streams poll the database",
                 events.directory)
    return None
