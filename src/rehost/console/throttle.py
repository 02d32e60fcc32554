"""Console sign-in throttling: failures counted per source address and per access key ID.

After `SignInThrottle.limit` failed sign-ins (5) within `window` seconds (5 minutes) from one address, or
for one access key ID from anywhere, that address (or key ID) is refused for `backoff` seconds (5 minutes)
before its secret is even looked at, so the refusal tells nothing about the key. Key IDs are counted
whether or not they exist, for the same reason. A successful sign-in clears its key's failures, not its
address's. Attempts still being checked count against the limit too (`begin` ... `end`), so parallel
requests cannot slip more than `limit` guesses past the check. Memory is bounded: each table holds at most `max_entries` addresses or keys (about 200 bytes
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
    in_flight: int = 0


class _Table:
    def __init__(self, max_entries: int, limit: int, window: float, backoff: float) -> None:
        self.max_entries, self.limit, self.window, self.backoff = max_entries, limit, window, backoff
        self.records: dict[str, _Record] = {}

    def wait(self, name: str, now: float) -> float:
        """Seconds before `name` may try again: the lock's rest, or 1 while attempts in flight fill the limit."""
        record = self.records.get(name)
        if record is None:
            return 0.0
        if record.locked_until > now:
            return record.locked_until - now
        recent = sum(1 for t in record.failures if now - t < self.window)
        return 1.0 if recent + record.in_flight >= self.limit else 0.0

    def enter(self, name: str, now: float) -> None:
        record = self.records.pop(name, None) or _Record()
        record.in_flight += 1
        self.records[name] = record  # re-inserted: the dict's order is the order of last activity
        if len(self.records) > self.max_entries:
            self._shrink(now)

    def leave(self, name: str, now: float, failed: bool) -> None:
        record = self.records.get(name)
        if record is None:  # dropped while in flight (a full table): count afresh
            record = self.records[name] = _Record(in_flight=1)
        record.in_flight -= 1
        if failed:
            record.failures = [t for t in record.failures if now - t < self.window] + [now]
            if len(record.failures) >= self.limit:
                record.locked_until = now + self.backoff
                record.failures = []

    def _shrink(self, now: float) -> None:
        def live(r: _Record) -> bool:
            return r.locked_until > now or r.in_flight > 0

        self.records = {k: r for k, r in self.records.items()
                        if live(r) or any(now - t < self.window for t in r.failures)}
        target = self.max_entries * 9 // 10  # room to spare, so a flood does not sweep on every attempt
        for name in [k for k, r in self.records.items() if not live(r)]:
            if len(self.records) <= target:
                break
            del self.records[name]


class SignInThrottle:
    """Thread-safe; `clock` is injectable for tests. Call `begin` before checking a secret and, unless it
    refused, `end` after."""

    def __init__(self, limit: int = 5, window: float = 300.0, backoff: float = 300.0, max_entries: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._addresses = _Table(max_entries, limit, window, backoff)
        self._keys = _Table(max_entries, limit, window, backoff)

    def begin(self, address: str, key_id: str) -> tuple[str, int] | None:
        """Why a sign-in from `address` with `key_id` is refused now, and the seconds to wait; or None, and
        the attempt counts as in flight until `end`."""
        now = self._clock()
        key = key_id[:128]
        with self._lock:
            by_address = self._addresses.wait(address, now)
            by_key = self._keys.wait(key, now) if key else 0.0
            if not by_address and not by_key:
                self._addresses.enter(address, now)
                if key:
                    self._keys.enter(key, now)
                return None
        wait = math.ceil(max(by_address, by_key))
        what = "from this address" if by_address >= by_key else "for this access key"
        minutes = max(1, math.ceil(wait / 60))
        return (f"Too many failed sign-in attempts {what}. Try again in {minutes} minute"
                f"{'s' if minutes != 1 else ''}."), wait

    def end(self, address: str, key_id: str, ok: bool) -> None:
        """The attempt `begin` let through is over: a failure counts for its address and key; a success
        clears its key's failures."""
        now = self._clock()
        key = key_id[:128]
        with self._lock:
            self._addresses.leave(address, now, failed=not ok)
            if key:
                self._keys.leave(key, now, failed=not ok)
                if ok:
                    self._keys.records.pop(key, None)
