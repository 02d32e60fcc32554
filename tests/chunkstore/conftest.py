"""Fixtures for the chunk store tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rehost.chunkstore.snapshots import SnapshotStore


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def store(data_dir: Path) -> Iterator[SnapshotStore]:
    s = SnapshotStore.open(data_dir)
    try:
        yield s
    finally:
        s.close()
