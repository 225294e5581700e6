"""Fixed-window request counting per identity (API key id, else client address).

Redis holds the counters when ``REDIS_URL`` is set, so several API processes
share one budget per key; otherwise they are kept in this process. If Redis
stops answering, counting falls back to this process rather than refusing
every request.
"""
from __future__ import annotations

import logging
import math
import threading
import time

log = logging.getLogger("rguide.ratelimit")


class RateLimiter:
    def __init__(self, limit: int, window_seconds: float, redis_url: str | None = None, namespace: str = "rguide"):
        self.limit, self.window = limit, window_seconds
        self.namespace = namespace
        self._redis = None
        if redis_url and limit > 0:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
        self._local: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def describe(self) -> str | None:
        return f"{self.limit} per {self.window:g} s per API key (or client address)" if self.enabled else None

    def hit(self, identity: str, now: float | None = None) -> tuple[bool, int]:
        """Count one request; return (allowed, seconds until the window resets)."""
        if not self.enabled:
            return True, 0
        now = time.time() if now is None else now
        window_index = int(now // self.window)
        retry_after = max(1, math.ceil((window_index + 1) * self.window - now))
        count = None
        if self._redis is not None:
            key = f"{self.namespace}:ratelimit:{identity}:{window_index}"
            try:
                pipe = self._redis.pipeline()
                pipe.incr(key)
                pipe.expire(key, int(math.ceil(self.window)) + 1)
                count = int(pipe.execute()[0])
            except Exception as exc:
                if not self._warned:
                    log.warning("rate limiter: Redis unavailable (%s); counting in this process", exc)
                    self._warned = True
        if count is None:
            with self._lock:
                for old in [k for k in self._local if k[1] < window_index]:
                    del self._local[old]
                count = self._local.get((identity, window_index), 0) + 1
                self._local[(identity, window_index)] = count
        return count <= self.limit, retry_after
