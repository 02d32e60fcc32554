"""Console sign-in throttling: failures counted per source address and per access key ID.

After `SignInThrottle.limit` failed sign-ins (5) within `window` seconds (5 minutes) from one address, or
for one access key ID from anywhere, that address (or key ID) is refused for `backoff` seconds (5 minutes)
before its secret is even looked at, so the refusal tells nothing about the key. Key IDs are counted
whether or not they exist, for the same reason. A successful sign-in clears its key's failures, not its
address's. Memory is bounded: each table holds at most `max_entries` addresses or keys (about 200 bytes
each); when one is full, entries whose failures and lock have expired go first, then the oldest unlocked
ones, down to 90% of the bound.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class _Table:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.records: dict[str, _Record] = {}

    def remaining(self, name: str, now: float) -> float:
        record = self.records.get(name)
        return max(0.0, record.locked_until - now) if record else 0.0

    def fail(self, name: str, now: float, limit: int, window: float, backoff: float) -> None:
        record = self.records.pop(name, None) or _Record()
        record.failures = [t for t in record.failures if now - t < window] + [now]
        if len(record.failures) >= limit:
            record.locked_until = now + backoff
            record.failures = []
        self.records[name] = record  # re-inserted: the dict's order is the order of last failure
        if len(self.records) > self.max_entries:
            self._shrink(now, window)

    def _shrink(self, now: float, window: float) -> None:
        self.records = {k: r for k, r in self.records.items()
                        if r.locked_until > now or any(now - t < window for t in r.failures)}
        target = self.max_entries * 9 // 10  # room to spare, so a flood does not sweep on every failure
        for name in [k for k, r in self.records.items() if r.locked_until <= now]:
            if len(self.records) <= target:
                break
            del self.records[name]


class SignInThrottle:
    """Thread-safe; `clock` is injectable for tests."""

    def __init__(self, limit: int = 5, window: float = 300.0, backoff: float = 300.0, max_entries: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.backoff = limit, window, backoff
        self._clock = clock
        self._lock = threading.Lock()
        self._addresses = _Table(max_entries)
        self._keys = _Table(max_entries)

    def refusal(self, address: str, key_id: str) -> tuple[str, int] | None:
        """Why a sign-in from `address` with `key_id` is refused now, and the seconds to wait; or None."""
        now = self._clock()
        with self._lock:
            by_address = self._addresses.remaining(address, now)
            by_key = self._keys.remaining(key_id[:128], now) if key_id else 0.0
        if not by_address and not by_key:
            return None
        wait = math.ceil(max(by_address, by_key))
        what = "from this address" if by_address >= by_key else "for this access key"
        minutes = max(1, math.ceil(wait / 60))
        return (f"Too many failed sign-in attempts {what}. Try again in {minutes} minute"
                f"{'s' if minutes != 1 else ''}."), wait

    def failed(self, address: str, key_id: str) -> None:
        now = self._clock()
        with self._lock:
            self._addresses.fail(address, now, self.limit, self.window, self.backoff)
            if key_id:
                self._keys.fail(key_id[:128], now, self.limit, self.window, self.backoff)

    def succeeded(self, key_id: str) -> None:
        with self._lock:
            self._keys.records.pop(key_id[:128], None)
