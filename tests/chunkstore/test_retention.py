"""Retention: the default policy on a synthetic timeline, and apply_retention on a real store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from rehost.chunkstore import CHUNK_SIZE
from rehost.chunkstore.manifest import Snapshot
from rehost.chunkstore.retention import DEFAULT_POLICY, RetentionPolicy, RetentionRule
from rehost.chunkstore.snapshots import SnapshotStore, VolumeSource

from .helpers import make_image

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def _snap(ts: datetime) -> Snapshot:
    return Snapshot(f"snap-{int(ts.timestamp()):017x}", "s-1", ts)


def test_default_policy_on_nine_days_of_five_minute_snapshots() -> None:
    times = [NOW - k * 5 * M for k in range(9 * 24 * 12)]
    kept = DEFAULT_POLICY.keep([_snap(t) for t in times], NOW)

    # Written out from the policy's words, periods aligned to UTC:
    ten_minutely = [NOW] + [NOW - 5 * M - k * 10 * M for k in range(6)]  # 12:00, 11:55, 11:45 ... 11:05
    hourly = [NOW] + [NOW - 5 * M - h * 60 * M for h in range(24)]  # 12:00, 11:55, 10:55 ... 12:55 yesterday
    daily = [NOW] + [datetime(2026, 1, d, 23, 55, tzinfo=UTC) for d in range(3, 10)]  # Jan 3 .. Jan 9
    expected = {_snap(t).snapshot_id for t in ten_minutely + hourly + daily}
    assert len(expected) == 36
    assert kept == expected


def test_the_newest_is_kept_even_when_old() -> None:
    old = [_snap(NOW - timedelta(days=30)), _snap(NOW - timedelta(days=40))]
    assert DEFAULT_POLICY.keep(old, NOW) == {old[0].snapshot_id}
    assert DEFAULT_POLICY.keep([], NOW) == set()


def test_snapshots_dated_after_now_are_kept() -> None:
    snaps = [_snap(NOW + 3 * M), _snap(NOW + 2 * M), _snap(NOW - 2 * M), _snap(NOW - 3 * M)]
    assert DEFAULT_POLICY.keep(snaps, NOW) == {
        snaps[0].snapshot_id,
        snaps[1].snapshot_id,
        snaps[2].snapshot_id,
    }


def test_a_custom_policy() -> None:
    hourly_for_3h = RetentionPolicy((RetentionRule(timedelta(hours=1), timedelta(hours=3)),))
    snaps = [_snap(NOW - k * 30 * M) for k in range(10)]  # 12:00, 11:30, 11:00, ... 07:30
    kept = hourly_for_3h.keep(snaps, NOW)
    assert kept == {_snap(t).snapshot_id for t in (NOW, NOW - 30 * M, NOW - 90 * M, NOW - 150 * M)}


def test_apply_retention_deletes_what_no_rule_keeps(store: SnapshotStore, tmp_path: Path) -> None:
    img = make_image(tmp_path / "a.img", 2 * CHUNK_SIZE, [(0, b"data")])
    vol = {"/dev/sda": VolumeSource(img, 2 * CHUNK_SIZE, None)}
    ages = {
        "now": timedelta(0),
        "3min": 3 * M,  # 11:57: its own 10-minute period
        "15min": 15 * M,  # 11:45
        "2h": timedelta(hours=2),  # 10:00: hourly
        "2h10m": timedelta(hours=2, minutes=10),  # 09:50: hourly
        "3d": timedelta(days=3),  # Jan 7 12:00: daily
        "3d1h": timedelta(days=3, hours=1),  # Jan 7 11:00: same day as an newer one
        "10d": timedelta(days=10),  # beyond every window
    }
    ids = {label: store.create("s-1", vol, NOW - age).snapshot_id for label, age in ages.items()}
    other = store.create("s-2", vol, NOW - timedelta(days=10))  # another server: untouched

    deleted = store.apply_retention("s-1", NOW)

    assert deleted == [ids["3d1h"], ids["10d"]]  # newest first
    assert {s.snapshot_id for s in store.list("s-1")} == {ids[k] for k in ages if k not in ("3d1h", "10d")}
    assert [s.snapshot_id for s in store.list("s-2")] == [other.snapshot_id]
    assert store.apply_retention("s-1", NOW) == []  # idempotent


def test_retention_spares_snapshots_a_launch_job_may_be_reading(store: SnapshotStore, tmp_path: Path) -> None:
    """A job's snapshot and a timer snapshot a minute later share a 10-minute period: the policy keeps only
    the newer, but the job's must survive until it has been exported."""
    img = make_image(tmp_path / "a.img", 2 * CHUNK_SIZE, [(0, b"data")])
    vol = {"/dev/sda": VolumeSource(img, 2 * CHUNK_SIZE, None)}
    job_snapshot = store.create("s-1", vol, NOW - 2 * M).snapshot_id
    store.create("s-1", vol, NOW - 1 * M)
    assert store.apply_retention("s-1", NOW) == []
    assert store.apply_retention("s-1", NOW + 15 * M) == [job_snapshot]  # later, the policy applies
