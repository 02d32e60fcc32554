"""The sender against a real replication server (in-process, TLS, staging volumes, chunk store): the staging
volume ends byte-identical, zero areas cost nothing, a restart resumes without a full resync, data the
store already holds is not sent again, and compression kicks in on a slow (throttled) link."""

from __future__ import annotations

import mmap
import os
import random
import time
from pathlib import Path

import pytest

from rehost.agent.discovery import Disk
from rehost.agent.sender import DedupProbe, DiskRun, Session
from rehost.agent.state import AgentState
from rehost.agent.throttle import Throttle
from rehost.agent.tracker import BlockTracker
from rehost.replication.protocol import ReplicationClient
from rehost.replication.server import ReplicationServer

from .conftest import MiB, RepEnv, make_image, sha_file

SID = "s-0123456789abcdef0"


def sync(env: RepEnv, server: ReplicationServer, state_dir: Path, image: Path, sid: str = SID,
         throttle: Throttle | None = None, snapshot: str = "") -> Session:
    """One agent session: HELLO, compare/send the whole image, FLUSH (and optionally snapshot), close."""
    state = AgentState(str(state_dir)).ensure()
    state.reset_for(sid)
    replication = state.replication()
    disk = Disk(str(image), str(image), image.stat().st_size, False, None)
    run = DiskRun(0, disk, state, replication["disks"].setdefault(disk.name, {}))
    client = ReplicationClient(server.address[0], server.address[1], env.ca_pem, timeout=30).connect()
    try:
        session = Session(client, [run], state, replication, throttle or Throttle())
        session.hello(sid, env.token(sid))
        assert session.full_scan(run)
        if snapshot:
            session.snapshot(snapshot)
        return session
    finally:
        client.close()
        run.close()


def test_initial_sync_is_identical_and_skips_zeros(rep_env: RepEnv, rep_server: ReplicationServer, tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 32 * MiB, [(0, 1 * MiB), (10 * MiB + 4096, 3 * MiB)])
    session = sync(rep_env, rep_server, tmp_path / "state", image)
    assert sha_file(rep_env.staging(SID, str(image))) == sha_file(image)
    # Only the 4 MiB of data (5 chunks-worth of partial overlap at most) went over the wire, not 32 MiB.
    assert session.bytes_sent <= 4 * MiB + 2 * 65536
    assert AgentState(str(tmp_path / "state")).replication()["disks"][str(image)]["initialSyncComplete"]


def test_restart_resumes_with_only_the_changed_chunk(rep_env: RepEnv, rep_server: ReplicationServer, tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 16 * MiB, [(0, 8 * MiB)])
    sync(rep_env, rep_server, tmp_path / "state", image)
    with open(image, "r+b") as f:  # the agent is "down": one 4 KiB block changes
        f.seek(5 * MiB + 8192)
        f.write(os.urandom(4096))
    again = sync(rep_env, rep_server, tmp_path / "state", image)
    assert again.bytes_sent <= 65536  # one chunk, not a resync
    assert sha_file(rep_env.staging(SID, str(image))) == sha_file(image)


def test_replication_server_restart_resumes_without_resync(rep_env: RepEnv, tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 8 * MiB, [(MiB, 4 * MiB)])
    srv = rep_env.start_server()
    try:
        sync(rep_env, srv, tmp_path / "state", image)
    finally:
        srv.stop(timeout=10)
    srv = rep_env.start_server()
    try:
        again = sync(rep_env, srv, tmp_path / "state", image)
    finally:
        srv.stop(timeout=10)
    assert again.bytes_sent == 0
    assert sha_file(rep_env.staging(SID, str(image))) == sha_file(image)


def test_lost_staging_volume_is_resent(rep_env: RepEnv, rep_server: ReplicationServer, tmp_path: Path) -> None:
    """If the server's staging volume is gone (the server says it is new), the agent's digests do not
    fool it: everything is sent again."""
    image = make_image(tmp_path / "disk.img", 8 * MiB, [(0, 2 * MiB)])
    sync(rep_env, rep_server, tmp_path / "state", image)
    rep_server.stop(timeout=10)
    staging_dir = rep_env.staging(SID, str(image)).parent
    for p in staging_dir.iterdir():
        p.unlink()
    srv = rep_env.start_server()
    try:
        again = sync(rep_env, srv, tmp_path / "state", image)
    finally:
        srv.stop(timeout=10)
    assert again.bytes_sent >= 2 * MiB
    assert sha_file(rep_env.staging(SID, str(image))) == sha_file(image)


def test_chunks_the_store_holds_are_not_sent_again(rep_env: RepEnv, rep_server: ReplicationServer, tmp_path: Path) -> None:
    image = make_image(tmp_path / "a.img", 8 * MiB, [(0, 4 * MiB)])
    sync(rep_env, rep_server, tmp_path / "state-a", image, sid=SID, snapshot="snap-request-1")
    other = "s-0123456789abcdef1"
    session = sync(rep_env, rep_server, tmp_path / "state-b", image, sid=other)
    assert session.bytes_sent == 0
    assert session.bytes_deduplicated == 4 * MiB
    assert sha_file(rep_env.staging(other, str(image))) == sha_file(image)


def test_data_the_store_holds_is_found_after_a_long_run_of_new_data(
        rep_env: RepEnv, rep_server: ReplicationServer, tmp_path: Path) -> None:
    """After windows of data the store does not hold the agent stops hashing every window (DedupProbe),
    but keeps sampling: a long region the store does hold (the same OS as another server) is still
    mostly not sent, and the staging volume is identical."""
    held = random.Random(7).randbytes(128 * MiB)
    first = tmp_path / "first.img"
    first.write_bytes(held)
    sync(rep_env, rep_server, tmp_path / "state-a", first, snapshot="snap-request-1")  # into the store
    image = tmp_path / "second.img"
    image.write_bytes(random.Random(8).randbytes(64 * MiB) + held)
    other = "s-0123456789abcdef1"
    session = sync(rep_env, rep_server, tmp_path / "state-b", image, sid=other)
    assert session.dedup.windows_skipped > 0  # the new data was not all hashed
    assert session.bytes_deduplicated >= 64 * MiB
    assert session.bytes_sent <= len(image.read_bytes()) - 64 * MiB
    assert sha_file(rep_env.staging(other, str(image))) == sha_file(image)


def test_dedup_probe_samples_after_misses_and_recovers_on_a_hit() -> None:
    probe = DedupProbe()
    asked = []
    for _ in range(DedupProbe.MISSES):
        asked.append(probe.wanted())
        probe.record(0)
    assert asked == [True] * DedupProbe.MISSES
    following = [probe.wanted() for _ in range(4 * DedupProbe.SAMPLE)]
    assert sum(following) == 4  # one window in SAMPLE
    probe.record(3)  # a sampled window hit
    assert all(probe.wanted() for _ in range(DedupProbe.MISSES))


def test_compresses_on_a_slow_link(rep_env: RepEnv, rep_server: ReplicationServer, tmp_path: Path) -> None:
    image = tmp_path / "text.img"
    text = b"".join(b"line %08d of a very compressible log file\n" % i for i in range(100000))[: 4 * MiB]
    image.write_bytes(text)
    session = sync(rep_env, rep_server, tmp_path / "state", image, throttle=Throttle(mbps=200))
    assert session.bytes_sent < len(text) // 2
    assert sha_file(rep_env.staging(SID, str(image))) == sha_file(image)


@pytest.mark.root
def test_tracked_small_writes_send_only_their_blocks(rep_env: RepEnv, rep_server: ReplicationServer,
                                                     loop_device: tuple[str, Path], tmp_path: Path) -> None:
    device, image = loop_device
    st = os.stat(device)
    dev = (os.major(st.st_rdev), os.minor(st.st_rdev))
    disk = Disk(device, device, image.stat().st_size, False, dev)
    with open(device, "r+b") as f:  # some data for the initial sync
        f.write(os.urandom(4 * MiB))
    state = AgentState(str(tmp_path / "state")).ensure()
    state.reset_for(SID)
    replication = state.replication()
    tracker = BlockTracker({0: dev}).start()
    run = DiskRun(0, disk, state, replication["disks"].setdefault(disk.name, {}))
    client = ReplicationClient(rep_server.address[0], rep_server.address[1], rep_env.ca_pem, timeout=30).connect()
    try:
        session = Session(client, [run], state, replication, Throttle())
        session.hello(SID, rep_env.token(SID))
        assert session.full_scan(run)
        tracker.take_dirty(0)
        before = session.bytes_sent
        rng = random.Random(3)
        blocks = rng.sample(range(image.stat().st_size // 4096), 200)
        fd = os.open(device, os.O_WRONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 4096)
        try:
            for b in blocks:
                buf.seek(0)
                buf.write(os.urandom(4096))
                os.pwritev(fd, [buf], b * 4096)
        finally:
            os.close(fd)
        deadline = time.monotonic() + 10
        dirty: dict[int, int] = {}
        while sum(bin(m).count("1") for m in dirty.values()) < len(set(blocks)) and time.monotonic() < deadline:
            time.sleep(0.1)
            for chunk, mask in tracker.take_dirty(0).items():
                dirty[chunk] = dirty.get(chunk, 0) | mask
        session.send_dirty(run, dirty)
        session.flush()
        assert session.bytes_sent - before <= 200 * 4096  # the written blocks, not 200 whole chunks
    finally:
        tracker.stop()
        client.close()
        run.close()
    assert sha_file(rep_env.staging(SID, device)) == sha_file(image)
    # After a restart the partly sent chunks are compared block by block: the blocks not sent were already
    # known, so nothing is sent again, and the staging volume stays identical.
    again = sync_device(rep_env, rep_server, tmp_path / "state", disk)
    assert again.bytes_sent == 0
    assert sha_file(rep_env.staging(SID, device)) == sha_file(image)


def sync_device(env: RepEnv, server: ReplicationServer, state_dir: Path, disk: Disk) -> Session:
    state = AgentState(str(state_dir)).ensure()
    replication = state.replication()
    run = DiskRun(0, disk, state, replication["disks"].setdefault(disk.name, {}))
    client = ReplicationClient(server.address[0], server.address[1], env.ca_pem, timeout=30).connect()
    try:
        session = Session(client, [run], state, replication, Throttle())
        session.hello(SID, env.token(SID))
        assert session.full_scan(run)
        return session
    finally:
        client.close()
        run.close()
