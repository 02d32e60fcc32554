"""Benchmark of the agent's data path: a 2 GiB image replicated to a real `rehost replication-server`
subprocess over TLS on loopback.

    .venv/bin/python bench/agent_sync.py [SIZE_MIB]

Prints: initial sync (half the image random data, half zeros), a rescan with nothing changed, the
yardstick of docs/machine.md (1% of the 4 KiB blocks rewritten, found by a rescan and sent) and, as root,
the same rewrite on a loop device found by the tracefs tracker and sent as 4 KiB blocks.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rehost.agent.discovery import Disk
from rehost.agent.rescan import FAST_ALGORITHM
from rehost.agent.sender import DiskRun, Session
from rehost.agent.state import AgentState
from rehost.agent.throttle import Throttle
from rehost.replication.auth import load_or_create_key, server_token
from rehost.replication.protocol import ReplicationClient
from rehost.replication.tls import ensure_tls

MiB = 1 << 20
SID = "s-00000000000000bench"[:19]


def start_server(data: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "rehost.cli.main", "replication-server", "--data-dir", str(data),
                             "--id", "rs-bench", "--port", "0", "--snapshot-interval", "0", "--log-level", "WARNING"],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("listening on "):
            return proc, int(line.rsplit(":", 1)[1])
    raise SystemExit("replication server did not start")


def session_run(port: int, ca: str, key: bytes, state_dir: Path, image: Path) -> tuple[float, Session]:
    state = AgentState(str(state_dir)).ensure()
    state.reset_for(SID)
    replication = state.replication()
    disk = Disk(str(image), str(image), image.stat().st_size, False, None)
    run = DiskRun(0, disk, state, replication["disks"].setdefault(disk.name, {}))
    client = ReplicationClient("127.0.0.1", port, ca, timeout=120).connect()
    t0 = time.monotonic()
    session = Session(client, [run], state, replication, Throttle())
    session.hello(SID, server_token(key, SID))
    session.full_scan(run)
    elapsed = time.monotonic() - t0
    client.close()
    run.close()
    return elapsed, session


def tracked_rewrite(port: int, ca: str, key: bytes, state_dir: Path, image: Path, rng: random.Random) -> None:
    """The yardstick again, on a loop device over the image, with changes found by the tracker."""
    import mmap

    from rehost.agent.tracker import BlockTracker

    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                            text=True).stdout.strip()
    try:
        st = os.stat(device)
        dev = (os.major(st.st_rdev), os.minor(st.st_rdev))
        disk = Disk(device, device, image.stat().st_size, False, dev)
        state = AgentState(str(state_dir)).ensure()
        state.reset_for(SID)
        replication = state.replication()
        run = DiskRun(0, disk, state, replication["disks"].setdefault(disk.name, {}))
        client = ReplicationClient("127.0.0.1", port, ca, timeout=120).connect()
        tracker = BlockTracker({0: dev}).start()
        try:
            session = Session(client, [run], state, replication, Throttle())
            session.hello(SID, server_token(key, SID))
            session.full_scan(run)
            tracker.take_dirty(0)
            blocks = rng.sample(range(disk.size // 4096), disk.size // 4096 // 100)
            fd = os.open(device, os.O_WRONLY | os.O_DIRECT)
            buf = mmap.mmap(-1, 4096)
            for b in blocks:
                buf.seek(0)
                buf.write(os.urandom(4096))
                os.pwritev(fd, [buf], b * 4096)
            os.close(fd)
            time.sleep(0.5)  # let the tracker drain the trace pipe
            before = session.bytes_sent
            t0 = time.monotonic()
            session.send_dirty(run, tracker.take_dirty(0))
            session.flush()
            t = time.monotonic() - t0
            print(f"1% of 4 KiB blocks rewritten on a loop device, tracked: {t:.2f} s, "
                  f"{(session.bytes_sent - before) // MiB} MiB sent, lost events: {tracker.take_lost(0)}")
        finally:
            tracker.stop()
            client.close()
            run.close()
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def main() -> None:
    size = int(sys.argv[1]) * MiB if len(sys.argv) > 1 else 2048 * MiB
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        key, ca = load_or_create_key(data), ensure_tls(data)
        image = root / "disk.img"
        rng = random.Random(7)
        with open(image, "wb") as f:
            f.truncate(size)
            for off in range(0, size, 8 * MiB):  # alternate 4 MiB of data, 4 MiB of zeros
                f.seek(off)
                f.write(rng.randbytes(4 * MiB))
        subprocess.run(["sync"], check=True)
        proc, port = start_server(data)
        try:
            print(f"fast digest: {FAST_ALGORITHM}; image {size // MiB} MiB, half random data")
            t, s = session_run(port, ca, key, root / "state", image)
            print(f"initial sync: {t:.2f} s, {size / t / MiB:.0f} MiB/s of disk, {s.bytes_sent // MiB} MiB sent")
            t, s = session_run(port, ca, key, root / "state", image)
            print(f"rescan, nothing changed: {t:.2f} s ({size / t / MiB:.0f} MiB/s), {s.bytes_sent} bytes sent")
            blocks = size // 4096
            with open(image, "r+b") as f:
                for b in rng.sample(range(blocks), blocks // 100):
                    f.seek(b * 4096)
                    f.write(os.urandom(4096))
            t, s = session_run(port, ca, key, root / "state", image)
            print(f"1% of 4 KiB blocks rewritten, rescan + send: {t:.2f} s, {s.bytes_sent // MiB} MiB sent")
            if os.geteuid() == 0:
                tracked_rewrite(port, ca, key, root / "state-tracked", image, rng)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
