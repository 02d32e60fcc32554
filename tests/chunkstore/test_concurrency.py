"""Several processes on one store: writers create snapshots while another applies retention, collects
garbage and verifies. No snapshot may lose a chunk."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

from rehost.chunkstore.snapshots import SnapshotStore

from .helpers import sha256_file

WRITER = textwrap.dedent(
    """
    import hashlib, json, random, sys
    from datetime import datetime, timedelta, timezone
    from pathlib import Path
    from rehost.chunkstore import CHUNK_SIZE
    from rehost.chunkstore.snapshots import SnapshotStore, VolumeSource

    data_dir, sid, seed, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    pool = [random.Random(k).randbytes(CHUNK_SIZE) for k in range(12)]  # shared by all writers: dedup
    img = Path(data_dir).parent / f"{sid}.img"
    with open(img, "wb") as f:
        f.truncate(32 * CHUNK_SIZE)
    store = SnapshotStore.open(data_dir)
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i in range(rounds):
        dirty = set(rng.sample(range(32), 4))
        with open(img, "r+b") as f:
            for c in dirty:
                f.seek(c * CHUNK_SIZE)
                f.write(rng.choice(pool))
        snap = store.create(sid, {"/dev/sda": VolumeSource(img, 32 * CHUNK_SIZE, None if i == 0 else dirty)},
                            base + timedelta(minutes=i))
        print(json.dumps([snap.snapshot_id, hashlib.sha256(img.read_bytes()).hexdigest()]), flush=True)
    store.close()
    """
)


def test_writers_and_collector_in_parallel_processes(data_dir: Path, tmp_path: Path) -> None:
    sids = ["s-aaaaaaaaaaaaaaaaa", "s-bbbbbbbbbbbbbbbbb"]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(data_dir), sid, str(n), "60"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n, sid in enumerate(sids)
    ]
    store = SnapshotStore.open(data_dir)
    try:
        far_future = datetime(2030, 1, 1, tzinfo=UTC)
        collections = 0
        while any(w.poll() is None for w in writers) or collections < 2:
            for sid in sids:
                store.apply_retention(sid, far_future)  # keeps only the newest: maximal churn
            store.gc(compact_below=0.9)
            assert store.verify().ok
            collections += 1
        outputs = [w.communicate()[0] for w in writers]
        assert [w.returncode for w in writers] == [0, 0]

        for sid, out in zip(sids, outputs, strict=True):
            expected = dict(json.loads(line) for line in out.splitlines())
            assert len(expected) == 60
            remaining = store.list(sid)
            assert remaining and remaining[0].snapshot_id == list(expected)[-1]
            for snap in remaining:
                target = tmp_path / f"{snap.snapshot_id}.raw"
                store.export(sid, snap.snapshot_id, "/dev/sda", target)
                assert sha256_file(target) == expected[snap.snapshot_id]
        for sid in sids:
            store.apply_retention(sid, far_future)
        store.gc()
        assert [len(store.list(sid)) for sid in sids] == [1, 1]
        assert store.verify().ok
        print(f"{collections} collections ran while the writers wrote")
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
                w.wait()
        store.close()
