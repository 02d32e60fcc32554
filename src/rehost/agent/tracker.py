"""Changed-block tracking through the kernel's block-layer tracepoints (tracefs), no kernel module.

`BlockTracker` creates its own tracefs instance (``instances/rehost-<pid>``), enables
``block/block_rq_complete`` filtered to the tracked devices' dev_t and to requests that change data (write,
discard, write-zeroes), and reads the instance's ``trace_pipe`` in a thread, turning each completed
request's sectors into dirty chunk indices per disk.

What a caller can rely on:
- every write that *completes* after `start()` returned marks its chunks dirty, unless events were lost;
- any loss (the per-CPU ``overrun``/``dropped events`` counters grow, or the pipe reports LOST events)
  sets the disk's `lost` flag: the caller must then rescan that disk (the hash-compare rescan is the
  safety net);
- `stop()` removes the instance (also on errors); an instance left by a dead agent is removed at start.

Tracking says nothing about writes before `start()`: the initial sync or a rescan covers those. For a loop
device backed by an image file, track the loop device.
"""

from __future__ import annotations

import os
import re
import select
import threading
import time
from collections.abc import Mapping

from rehost.errors import ReplicationError

TRACEFS = "/sys/kernel/tracing"
SECTOR = 512
BLOCK = 4096  # granularity of the dirty masks: what a file system writes at least
_EVENT = re.compile(rb"block_rq_complete: (\d+),(\d+) (\S+) \(.*?\) (\d+) \+ (\d+)")
_LOST = re.compile(rb"LOST (\d+) EVENTS")


class TrackerUnavailable(ReplicationError):
    """Block tracepoints cannot be used here (not root, no tracefs): fall back to rescans."""


def _kernel_dev(major: int, minor: int) -> int:
    """The kernel's internal dev_t, as the tracepoint's ``dev`` field holds it (not the userspace encoding)."""
    return (major << 20) | minor


def ensure_tracefs(root: str = TRACEFS) -> str:
    """The tracefs mount point, mounting it when needed. Raises TrackerUnavailable when that fails."""
    if os.path.exists(os.path.join(root, "instances")):
        return root
    if os.path.exists("/sys/kernel/debug/tracing/instances"):
        return "/sys/kernel/debug/tracing"
    if os.geteuid() != 0:
        raise TrackerUnavailable("change tracking needs root (tracefs)")
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", root.encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise TrackerUnavailable(f"cannot mount tracefs on {root}: {os.strerror(err)}")
    return root


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class BlockTracker:
    """Dirty-chunk tracking for block devices ``{disk_index: (major, minor)}``. Thread-safe."""

    def __init__(
        self,
        devices: Mapping[int, tuple[int, int]],
        chunk_size: int = 65536,
        buffer_kb: int = 4096,
        root: str = TRACEFS,
    ) -> None:
        self.devices = dict(devices)
        self.chunk_size = chunk_size
        self.buffer_kb = buffer_kb
        self.root = root
        self.instance = ""
        self.events = 0  # completed write requests seen, for tests and metrics
        self._by_dev = {_kernel_dev(*dev): index for index, dev in self.devices.items()}
        # disk -> {chunk index: bit mask of the chunk's written 4 KiB blocks (bit b = block b)}
        self._dirty: dict[int, dict[int, int]] = {index: {} for index in self.devices}
        self._lost: dict[int, bool] = {index: False for index in self.devices}
        self._since: dict[int, float] = {}  # disk -> when its current dirty set got its first chunk
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counters = 0

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> BlockTracker:
        """Create the instance and start reading; returns once events are being recorded."""
        if not self.devices:
            raise TrackerUnavailable("no block devices to track")
        try:
            root = ensure_tracefs(self.root)
            instances = os.path.join(root, "instances")
            self._remove_stale(instances)
            self.instance = os.path.join(instances, f"rehost-{os.getpid()}-{id(self) & 0xFFFF:x}")
            os.mkdir(self.instance)
        except OSError as exc:
            raise TrackerUnavailable(f"cannot create a tracefs instance: {exc}") from exc
        try:
            _write(os.path.join(self.instance, "buffer_size_kb"), str(self.buffer_kb))
            event = os.path.join(self.instance, "events", "block", "block_rq_complete")
            devs = " || ".join(f"dev == {d}" for d in sorted(self._by_dev))
            # rwbs: W = write, D = discard (reads back as zeros), N = write-zeroes and other data-changing ops.
            _write(
                os.path.join(event, "filter"),
                f'({devs}) && (rwbs ~ "*W*" || rwbs ~ "*D*" || rwbs ~ "*N*")',
            )
            _write(os.path.join(event, "enable"), "1")
            _write(os.path.join(self.instance, "tracing_on"), "1")
            self._counters = self._loss_counters()
            fd = os.open(os.path.join(self.instance, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            self._remove_instance()
            raise TrackerUnavailable(f"cannot enable block tracepoints: {exc}") from exc
        self._thread = threading.Thread(target=self._run, args=(fd,), name="rehost-tracker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading and remove the tracefs instance."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._remove_instance()

    def __enter__(self) -> BlockTracker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what callers read -----------------------------------------------------------------------------------

    def take_dirty(self, disk: int) -> dict[int, int]:
        """The chunks written since the last call, each with the bit mask of its written 4 KiB blocks
        (bit b = bytes [b * 4096, (b + 1) * 4096) of the chunk); clears them."""
        with self._lock:
            dirty, self._dirty[disk] = self._dirty[disk], {}
            self._since.pop(disk, None)
        return dirty

    def oldest_dirty_age(self) -> float:
        """Seconds since the oldest write not yet taken was seen (0 when nothing is dirty): the lag."""
        with self._lock:
            return time.monotonic() - min(self._since.values()) if self._since else 0.0

    def dirty_count(self, disk: int) -> int:
        with self._lock:
            return len(self._dirty[disk])

    def take_lost(self, disk: int) -> bool:
        """True when events may have been lost since the last call: the disk needs a rescan."""
        self._check_loss()
        with self._lock:
            lost, self._lost[disk] = self._lost[disk], False
        return lost

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- internals -------------------------------------------------------------------------------------------

    def _run(self, fd: int) -> None:
        pending = b""
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([fd], [], [], 0.2)
                if not ready:
                    continue
                try:
                    data = os.read(fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    continue
                lines = (pending + data).split(b"\n")
                pending = lines.pop()
                self._parse(lines)
        except OSError:
            self._mark_all_lost()  # the reader died: nothing it would have seen can be trusted
        finally:
            os.close(fd)

    def _parse(self, lines: list[bytes]) -> None:
        marks: list[tuple[int, int, int]] = []
        lost = False
        for line in lines:
            m = _EVENT.search(line)
            if m is None:
                if _LOST.search(line):
                    lost = True
                continue
            index = self._by_dev.get(_kernel_dev(int(m.group(1)), int(m.group(2))))
            if index is None:
                continue
            sector, count = int(m.group(4)), int(m.group(5))
            if count == 0:
                continue  # a pure flush: no data changed
            marks.append((index, sector * SECTOR // BLOCK, ((sector + count) * SECTOR - 1) // BLOCK))
        now = time.monotonic()
        per_chunk = self.chunk_size // BLOCK
        with self._lock:
            for index, first, last in marks:
                dirty = self._dirty[index]
                for block in range(first, last + 1):
                    chunk, bit = divmod(block, per_chunk)
                    dirty[chunk] = dirty.get(chunk, 0) | (1 << bit)
                self._since.setdefault(index, now)
            self.events += len(marks)
            if lost:
                for index in self._lost:
                    self._lost[index] = True

    def _loss_counters(self) -> int:
        total = 0
        per_cpu = os.path.join(self.instance, "per_cpu")
        for cpu in os.listdir(per_cpu):
            try:
                with open(os.path.join(per_cpu, cpu, "stats")) as f:
                    for line in f:
                        key, _, value = line.partition(":")
                        if key.strip() in ("overrun", "commit overrun", "dropped events"):
                            total += int(value.strip() or 0)
            except (OSError, ValueError):
                continue
        return total

    def _check_loss(self) -> None:
        if not self.instance:
            return
        try:
            counters = self._loss_counters()
        except OSError:
            self._mark_all_lost()
            return
        if counters != self._counters:
            self._counters = counters
            self._mark_all_lost()
        if not self.alive:
            self._mark_all_lost()

    def _mark_all_lost(self) -> None:
        with self._lock:
            for index in self._lost:
                self._lost[index] = True

    def _remove_instance(self) -> None:
        if not self.instance:
            return
        try:
            _write(os.path.join(self.instance, "tracing_on"), "0")
        except OSError:
            pass
        try:
            os.rmdir(self.instance)
        except OSError:
            pass
        self.instance = ""

    @staticmethod
    def _remove_stale(instances: str) -> None:
        """Remove instances of agents that died without cleaning up (their pid no longer runs)."""
        for name in os.listdir(instances):
            parts = name.split("-")
            if len(parts) < 2 or parts[0] != "rehost" or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            if pid == os.getpid() or os.path.exists(f"/proc/{pid}"):
                continue
            try:
                os.rmdir(os.path.join(instances, name))
            except OSError:
                pass
