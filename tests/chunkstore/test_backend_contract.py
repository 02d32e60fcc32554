"""The backend contract, run against every backend implementation."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rehost.chunkstore.backends import Backend, ObjectNotFound, get_backend
from rehost.chunkstore.backends.posixfs import PosixFS
from rehost.errors import InvalidInput, NotFound, StorageError

BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "posixfs": lambda tmp: PosixFS(tmp / "root"),
    "posixfs-url": lambda tmp: get_backend(f"file://{tmp / 'root'}"),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = BACKENDS[request.param](tmp_path)
    try:
        yield b
    finally:
        b.close()


def test_put_then_get_returns_the_same_bytes(backend: Backend) -> None:
    data = os.urandom(300_000)
    backend.put("packs/ab/abcdef", data)
    assert backend.get("packs/ab/abcdef") == data
    assert backend.exists("packs/ab/abcdef")


def test_put_replaces_an_object_whole(backend: Backend) -> None:
    backend.put("x", b"a" * 1000)
    backend.put("x", b"bb")
    assert backend.get("x") == b"bb"


def test_empty_object(backend: Backend) -> None:
    backend.put("empty", b"")
    assert backend.get("empty") == b""
    assert backend.exists("empty")


def test_ranged_get(backend: Backend) -> None:
    data = bytes(range(256)) * 100
    backend.put("obj", data)
    assert backend.get("obj", 10, 20) == data[10:30]
    assert backend.get("obj", 1000) == data[1000:]
    assert backend.get("obj", len(data) - 5, 100) == data[-5:]  # short only at the end
    assert backend.get("obj", len(data) + 10, 4) == b""


def test_missing_object_is_not_found(backend: Backend) -> None:
    with pytest.raises(ObjectNotFound):
        backend.get("nope")
    with pytest.raises(NotFound):  # part of the rehost error tree
        backend.get("ns/nope", 0, 10)
    with pytest.raises(ObjectNotFound):
        backend.delete("nope")
    assert not backend.exists("nope")


def test_delete(backend: Backend) -> None:
    backend.put("ns/a", b"1")
    backend.delete("ns/a")
    assert not backend.exists("ns/a")
    with pytest.raises(ObjectNotFound):
        backend.get("ns/a")


def test_list_names_direct_children_only(backend: Backend) -> None:
    for name in ("m/s-1/snap-a", "m/s-1/snap-b", "m/s-2/snap-c", "m/top"):
        backend.put(name, b"x")
    assert sorted(backend.list("m")) == ["s-1", "s-2", "top"]
    assert sorted(backend.list("m/s-1")) == ["snap-a", "snap-b"]
    assert list(backend.list("absent")) == []


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "a//b", ".", "a/./b", "sp ace", "a/"])
def test_invalid_names_are_refused(backend: Backend, name: str) -> None:
    with pytest.raises(StorageError):
        backend.put(name, b"x")


def test_concurrent_puts_of_one_name_leave_one_whole_object(backend: Backend) -> None:
    payloads = [bytes([i]) * 500_000 for i in range(8)]
    threads = [threading.Thread(target=backend.put, args=("r/race", p)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backend.get("r/race") in payloads
    assert list(backend.list("r")) == ["race"]  # no temporary left visible


def test_posixfs_crash_litter_is_invisible_and_cleaned(tmp_path: Path) -> None:
    b = PosixFS(tmp_path / "root")
    b.put("packs/aa/aa1", b"good")
    # What a put interrupted between write and rename leaves behind.
    (tmp_path / "root" / "packs" / "aa" / "aa2.tmp-123456").write_bytes(b"half")
    assert list(b.list("packs/aa")) == ["aa1"]
    assert b.cleanup_temporaries("packs") == 1
    assert os.listdir(tmp_path / "root" / "packs" / "aa") == ["aa1"]


def test_posixfs_without_create_refuses_a_missing_root(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        PosixFS(tmp_path / "missing", create=False)


def test_get_backend_refuses_unknown_schemes() -> None:
    with pytest.raises(InvalidInput):
        get_backend("ftp://example/x")
