"""Partition tables, loop devices and mounts for disk images (root only).

This machine has no device-mapper, no NBD and ``losetup -P`` creates no partition devices, so a partition
is attached on its own with ``losetup --offset --sizelimit`` taken from the MBR/GPT (``sfdisk --json``).
Every context manager here undoes what it did, in reverse order, even when the body raises.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class CommandFailed(Exception):
    """An external command exited non-zero; ``stderr`` holds its complaint."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{argv[0]} exited {returncode}: {stderr.strip()[-500:]}")
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


def run(argv: Sequence[str], *, input: bytes | None = None, timeout: float = 600,
        env: dict[str, str] | None = None) -> str:
    """Run a command, return its stdout (text); raise `CommandFailed` on a non-zero exit."""
    proc = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc.stdout.decode(errors="replace")


@dataclass(frozen=True)
class Partition:
    """One partition of a disk image: byte offset and size, MBR type or GPT type GUID, bootable flag."""

    number: int
    offset: int
    size: int
    type: str
    bootable: bool
    #: The partition's PARTUUID (GPT's unique GUID; an MBR's disk identifier and number), lower case.
    uuid: str = ""


def read_partitions(image: Path) -> tuple[str, list[Partition]]:
    """Return the partition table's label ("dos" or "gpt") and its partitions.

    Raises `CommandFailed` when the image has no partition table sfdisk understands.
    """
    out = run(["sfdisk", "--json", str(image)])
    table = json.loads(out)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    parts = []
    for i, p in enumerate(table.get("partitions", []), start=1):
        parts.append(Partition(number=i, offset=int(p["start"]) * sector, size=int(p["size"]) * sector,
                               type=str(p.get("type", "")), bootable=bool(p.get("bootable", False)),
                               uuid=_partuuid(table, p, i)))
    return str(table.get("label", "")), parts


def _partuuid(table: dict[str, object], part: dict[str, object], number: int) -> str:
    if "uuid" in part:
        return str(part["uuid"]).lower()
    ident = str(table.get("id", ""))
    return f"{ident.removeprefix('0x').lower()}-{number:02x}" if table.get("label") == "dos" and ident else ""


def make_single_partition_mbr(image: Path) -> Partition:
    """Write an MBR with one bootable Linux partition from 1 MiB to the end of the image."""
    run(["sfdisk", "--quiet", str(image)], input=b"label: dos\nstart=2048, type=83, bootable\n")
    return read_partitions(image)[1][0]


@contextlib.contextmanager
def loop_device(image: Path, *, offset: int = 0, size: int | None = None,
                read_only: bool = False) -> Iterator[Path]:
    """Attach ``image`` (or the byte range offset..offset+size of it) to a free loop device."""
    argv = ["losetup", "--find", "--show", "--offset", str(offset)]
    if size is not None:
        argv += ["--sizelimit", str(size)]
    if read_only:
        argv.append("--read-only")
    dev = Path(run(argv + [str(image)]).strip())
    try:
        yield dev
    finally:
        _retry(["losetup", "--detach", str(dev)])


@contextlib.contextmanager
def mounted(device: Path, mountpoint: Path, *, read_only: bool = False, fstype: str | None = None,
            options: str = "") -> Iterator[Path]:
    """Mount ``device`` on ``mountpoint`` (created if missing) for the duration of the block."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    argv = ["mount"]
    if fstype:
        argv += ["-t", fstype]
    opts = ",".join(o for o in ("ro" if read_only else "", options) if o)
    if opts:
        argv += ["-o", opts]
    run(argv + [str(device), str(mountpoint)])
    try:
        yield mountpoint
    finally:
        _retry(["umount", str(mountpoint)])


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[Path]:
    """Bind /dev, /proc, /sys (and a fresh /run, /tmp) into ``root`` so tools run in a chroot work."""
    done: list[Path] = []
    try:
        for src, opts in (("/dev", ["--bind"]), ("/dev/pts", ["--bind"]), ("proc", ["-t", "proc"]),
                          ("sysfs", ["-t", "sysfs"]), ("tmpfs", ["-t", "tmpfs"])):
            target = {"proc": root / "proc", "sysfs": root / "sys", "tmpfs": root / "run"}.get(
                src, root / src.lstrip("/"))
            target.mkdir(parents=True, exist_ok=True)
            run(["mount", *opts, src, str(target)])
            done.append(target)
        yield root
    finally:
        for target in reversed(done):
            _retry(["umount", "--lazy", str(target)] if target.name == "dev" else ["umount", str(target)])


def chroot(root: Path, argv: Sequence[str], *, timeout: float = 600) -> str:
    """Run ``argv`` inside ``root`` with a clean, non-interactive environment."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
           "HOME": "/root"}
    return run(["chroot", str(root), *argv], timeout=timeout, env=env)


def _retry(argv: list[str], attempts: int = 10) -> None:
    """Run a cleanup command, retrying while the kernel still reports the target busy."""
    for i in range(attempts):
        try:
            run(argv, timeout=60)
            return
        except CommandFailed as exc:
            if i == attempts - 1:
                log.error("cleanup failed: %s", exc)
                return
            time.sleep(0.3 * (i + 1))
