"""Request rate limiting per access key: a token bucket, answered with MGN's ThrottlingException."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from rehost.api.core.errors import AwsError


class RateLimiter:
    """Allows ``rate`` requests per second per key with bursts of ``burst``; ``rate`` 0 disables it.

    Thread-safe. Buckets of keys not seen for a minute are dropped, so memory follows the active keys.
    """

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, 2 * rate)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()
        self._last_sweep = clock()

    def check(self, key: str) -> None:
        """Take one token for ``key`` or raise ThrottlingException with the seconds to wait."""
        if self.rate <= 0:
            return
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.rate)
                raise AwsError("ThrottlingException", "Rate exceeded", 429, retryAfterSeconds=str(wait))
            self._buckets[key] = (tokens - 1.0, now)
            if now - self._last_sweep > 60:
                self._last_sweep = now
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
