"""The FUSE map that joins a logical volume's extents: bytes, and the process's signal handling kept."""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

import pytest

from rehost.conversion.fusemap import MappedFiles
from rehost.conversion.lvm import Extent

pytestmark = pytest.mark.root

_libc = ctypes.CDLL(None, use_errno=True)
SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)


def handlers() -> dict[int, bytes]:
    """Each signal's sa_handler as the kernel holds it (not Python's cached view)."""
    out = {}
    for sig in SIGNALS:
        buf = ctypes.create_string_buffer(256)
        assert _libc.sigaction(int(sig), None, buf) == 0
        out[int(sig)] = buf.raw[:8]
    return out


def test_a_map_joins_extents_and_leaves_the_process_signals_as_they_were(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(os.urandom(3 * 4096))
    b.write_bytes(os.urandom(2 * 4096))
    before = handlers()
    assert before[int(signal.SIGPIPE)] == (1).to_bytes(8, "little")  # Python ignores SIGPIPE
    fuse = MappedFiles(tmp_path / "map", {"lv": [Extent(b, 4096, 4096), Extent(a, 0, 8192)]})
    try:
        # libfuse's own handlers (and its "ignore SIGPIPE") were put back to the process's
        assert handlers() == before
        data = fuse.path("lv").read_bytes()
        assert data == b.read_bytes()[4096:] + a.read_bytes()[:8192]
        with open(fuse.path("lv"), "r+b") as f:
            f.seek(4096)
            f.write(b"x" * 10)
        assert a.read_bytes()[:10] == b"x" * 10
    finally:
        fuse.close()
    # libfuse resets what it thinks is still its own to the default action on its way out: SIGPIPE would
    # kill the process at the next write to a closed socket.
    assert handlers() == before
