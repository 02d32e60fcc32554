"""A real, tiny bootable disk: an MBR boot sector that writes a line to the serial port and halts.

SeaBIOS boots it from the QEMU target's virtio disk in well under a second under TCG, so launch tests
exercise the real target (VM, forwarded ports, serial console) without a multi-minute OS image.
"""

from __future__ import annotations

from pathlib import Path

import pytest

GUEST_BANNER = b"rehost-tiny-guest booted"


def boot_sector(message: bytes) -> bytes:
    """16-bit real-mode code at 0x7c00: print ``message`` on COM1 (port 0x3f8), then halt forever."""
    code = bytes([
        0xFA,              # cli
        0x31, 0xC0,        # xor ax, ax
        0x8E, 0xD8,        # mov ds, ax
        0xFC,              # cld
        0xBE, 0x17, 0x7C,  # mov si, 0x7c17 (the message, right after this code)
        0xBA, 0xF8, 0x03,  # mov dx, 0x3f8
        0xAC,              # loop: lodsb
        0x84, 0xC0,        # test al, al
        0x74, 0x03,        # jz done
        0xEE,              # out dx, al
        0xEB, 0xF8,        # jmp loop
        0xF4,              # done: hlt
        0xEB, 0xFD,        # jmp done
    ])
    assert len(code) == 0x17
    sector = code + message + b"\r\n\0"
    return sector.ljust(510, b"\0") + b"\x55\xaa"


@pytest.fixture(scope="session")
def tiny_boot_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-image") / "tiny.raw"
    with open(path, "wb") as f:
        f.write(boot_sector(GUEST_BANNER))
        f.truncate(1024 * 1024)
    return path
