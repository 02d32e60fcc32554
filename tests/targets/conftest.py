"""A tiny guest for driver tests: a boot sector that prints a line on COM1 and halts (no OS to wait for)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

TINY_TEXT = b"rehost tiny guest says hello\r\n"

# xor ax,ax; mov ds,ax; cld; mov dx,0x3f8; mov si,0x7c16; l: lodsb; test al,al; jz h; out dx,al; jmp l;
# h: hlt; jmp h; msg
_CODE = bytes.fromhex("31c08ed8fc" "baf803" "be167c" "ac" "84c0" "7403" "ee" "ebf8" "f4" "ebfd")


@pytest.fixture(scope="session")
def tiny_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A qcow2 base image whose boot sector writes `TINY_TEXT` to the serial port."""
    d = tmp_path_factory.mktemp("tiny")
    raw = d / "tiny.raw"
    sector = bytearray(512)
    body = _CODE + TINY_TEXT + b"\0"
    sector[: len(body)] = body
    sector[510:512] = b"\x55\xaa"
    raw.write_bytes(bytes(sector) + bytes(1024 * 1024 - 512))
    out = d / "tiny.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True)
    return out


# One libvirtd for the whole session, shared by every module here (two cannot run at once: libvirtd's
# pidfile and run directory are the machine's).
from .libvirt_host import libvirt_host  # noqa: E402, F401
