"""A rescan against a real replication server (in-process, TLS, staging volume) sends the rewritten 4 KiB
blocks of changed chunks, not the chunks; and a crash between the server applying new bytes and the FLUSH_ACK
cannot make the agent skip a block that is later rewritten to its old content."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

from rehost.agent.discovery import Disk
from rehost.agent.sender import DiskRun, Session
from rehost.agent.state import AgentState
from rehost.agent.throttle import Throttle
from rehost.replication.protocol import ReplicationClient
from rehost.replication.server import ReplicationServer

from .conftest import MiB, RepEnv, make_image, sha_file
from .test_sender import SID, sync


def rewrite(image: Path, blocks: list[int]) -> dict[int, bytes]:
    """Overwrite each 4 KiB block with random bytes; returns the old contents."""
    old = {}
    with open(image, "r+b") as f:
        for b in blocks:
            f.seek(b * 4096)
            old[b] = f.read(4096)
            f.seek(b * 4096)
            f.write(os.urandom(4096))
    return old


def test_rescan_sends_only_the_rewritten_blocks(rep_env: RepEnv, rep_server: ReplicationServer, tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 32 * MiB, [(0, 24 * MiB)])
    sync(rep_env, rep_server, tmp_path / "state", image)
    blocks = random.Random(5).sample(range(32 * MiB // 4096), 80)  # in data and in zero areas
    rewrite(image, blocks)
    again = sync(rep_env, rep_server, tmp_path / "state", image)
    assert again.bytes_sent == 80 * 4096  # random data: sent raw, block by block
    assert sha_file(rep_env.staging(SID, str(image))) == sha_file(image)
    assert sync(rep_env, rep_server, tmp_path / "state", image).bytes_sent == 0


def test_crash_before_flush_ack_cannot_skip_a_reverted_block(
    rep_env: RepEnv, rep_server: ReplicationServer, tmp_path: Path
) -> None:
    image = make_image(tmp_path / "disk.img", 8 * MiB, [(0, 8 * MiB)])
    sync(rep_env, rep_server, tmp_path / "state", image)
    original = sha_file(image)
    old = rewrite(image, [3, 700, 1500])
    rewritten = sha_file(image)
    # An agent that sends the rewrite and dies before FLUSH (a stop before the first flush, then no flush).
    state = AgentState(str(tmp_path / "state")).ensure()
    replication = state.replication()
    disk = Disk(str(image), str(image), image.stat().st_size, False, None)
    run = DiskRun(0, disk, state, replication["disks"].setdefault(disk.name, {}))
    client = ReplicationClient(rep_server.address[0], rep_server.address[1], rep_env.ca_pem, timeout=30).connect()
    stop = threading.Event()
    stop.set()
    try:
        session = Session(client, [run], state, replication, Throttle())
        session.hello(SID, rep_env.token(SID))
        assert not session.full_scan(run, stop)
        assert session.bytes_sent == 3 * 4096
    finally:
        client.close()
        run.close()
    staging = rep_env.staging(SID, str(image))
    deadline = time.monotonic() + 20
    while sha_file(staging) != rewritten and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sha_file(staging) == rewritten  # the server applied the bytes the agent never saw acknowledged
    with open(image, "r+b") as f:  # the blocks return to their old contents while the agent is down
        for b, data in old.items():
            f.seek(b * 4096)
            f.write(data)
    assert sha_file(image) == original
    again = sync(rep_env, rep_server, tmp_path / "state", image)
    assert again.bytes_sent == 3 * 4096
    assert sha_file(staging) == original
