"""The guest edits of conversion, on plain directory trees (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rehost.conversion import linux
from rehost.errors import ConversionError

UUIDS = {1: "1111-root", 2: "2222-swap"}
DISKS = {"/dev/sda"}


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_os_release_required(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="unknown operating system"):
        linux.os_release(tmp_path)
    write(tmp_path, "usr/lib/os-release", 'ID=debian\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").symlink_to("../usr/lib/os-release")
    assert linux.os_release(tmp_path)["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"
