"""Snapshot retention: which snapshots a policy keeps at a given moment (pure, no I/O).

A rule ``(interval, window)`` keeps, among the snapshots taken in the last ``window`` (``now - window <
taken_at <= now``), the newest one of each ``interval``-long period; periods are aligned to the Unix
epoch in UTC (10-minute periods start at :00, :10, ...; days at midnight UTC). A snapshot is kept if any
rule keeps it. The newest snapshot is always kept, and so is any snapshot dated after ``now`` (clocks
disagree; deleting the future is never what anyone meant).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rehost.chunkstore.manifest import Snapshot

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RetentionRule:
    """Keep the newest snapshot of each ``interval`` within the last ``window``."""

    interval: timedelta
    window: timedelta


@dataclass(frozen=True)
class RetentionPolicy:
    """A set of rules; the default keeps one every 10 minutes for an hour, hourly for a day, daily for 7
    days, and always the newest."""

    rules: tuple[RetentionRule, ...] = (
        RetentionRule(timedelta(minutes=10), timedelta(hours=1)),
        RetentionRule(timedelta(hours=1), timedelta(days=1)),
        RetentionRule(timedelta(days=1), timedelta(days=7)),
    )

    def keep(self, snapshots: Iterable[Snapshot], now: datetime) -> set[str]:
        """The IDs of the snapshots this policy keeps at ``now`` (an aware datetime)."""
        snaps = sorted(snapshots, key=lambda s: (s.taken_at, s.snapshot_id), reverse=True)
        if not snaps:
            return set()
        kept = {snaps[0].snapshot_id}
        kept.update(s.snapshot_id for s in snaps if s.taken_at > now)
        for rule in self.rules:
            seen_periods: set[int] = set()
            for s in snaps:  # newest first, so the first snapshot met in a period is its newest
                if s.taken_at > now or s.taken_at <= now - rule.window:
                    continue
                period = (s.taken_at - _EPOCH) // rule.interval
                if period not in seen_periods:
                    seen_periods.add(period)
                    kept.add(s.snapshot_id)
        return kept


DEFAULT_POLICY = RetentionPolicy()
