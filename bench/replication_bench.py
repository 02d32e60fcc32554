"""Replication benchmark of issue 3: the agent against a real `rehost replication-server` beside rsync and dd.

    sudo .venv/bin/python bench/replication_bench.py [--runs 3] [--realistic-mib 4096] [--random-mib 2048]
        [--lag-seconds 20] [--lag-rate 200] [--cycles 1.0] [--json out.json]

Root is needed (mkfs + loop mount for the realistic image, loop devices and tracefs for the tracked agent).
Two images are built in a scratch folder next to the repository (``.cache/bench``, removed afterwards):

- realistic: a sparse file, ``mkfs.ext4``, loop-mounted, the cached debootstrap trees
  (``.cache/rehost-images/*.tar``, else a copy of ``/usr``) extracted into it, unmounted: OS files and
  free space;
- random: ``os.urandom`` bytes.

For each image, each run (a fresh source server ID, so a fresh staging volume):

1. ``dd if=IMG of=NEW bs=4M conv=fsync`` (a new file);
2. ``rsync --inplace --no-whole-file -B4096 --fsync --stats IMG NEW`` (initial copy);
3. the agent's initial sync: its `Session` (the code the agent process runs) over TLS on loopback to a real
   `rehost replication-server` subprocess, which makes staging durable at every FLUSH;
4. 1% of the 4 KiB blocks rewritten with random bytes at random offsets of IMG, then
   rsync again onto its copy (seconds; literal and total bytes sent from ``--stats``) and the agent's rescan
   (a new session comparing the image with its digests, as after an agent restart);
5. the image on a loop device, tracked by the tracefs `BlockTracker`, the same disk (digests, staging
   volume): another 1% rewritten with O_DIRECT on the device, then the dirty blocks sent and flushed;
6. lag: a separate process writes ``--lag-rate`` random 4 KiB blocks per second with O_DIRECT to the loop
   device (each block carries a sequence number) while the bench replicates as the agent's runner does
   (take the tracker's dirty set, send, FLUSH, wait ``cycle`` seconds: the runner's default is 1 s); after
   every FLUSH_ACK the staging volume is checked for the blocks outstanding, and a write's lag is the FLUSH_ACK
   time minus the time its ``pwrite`` returned;
7. the staging volume compared with the image by sha256.

All reads are warm (the images sit in the page cache, as for the yardstick of docs/machine-limits.md).
Prints a markdown table of medians (with min-max) and the load average, and optionally writes every raw
figure as JSON.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import mmap
import multiprocessing as mp
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rehost.agent.discovery import Disk
from rehost.agent.rescan import FAST_ALGORITHM
from rehost.agent.sender import DiskRun, Session
from rehost.agent.state import AgentState
from rehost.agent.throttle import Throttle
from rehost.agent.tracker import BlockTracker
from rehost.replication.auth import load_or_create_key, server_token
from rehost.replication.protocol import ReplicationClient
from rehost.replication.staging import disk_key
from rehost.replication.tls import ensure_tls

MiB = 1 << 20
BLOCK = 4096
REPO = Path(__file__).resolve().parent.parent
MARK = b"RHLAG\0"


def sh(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


def sha_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return h.hexdigest()


# -- images ----------------------------------------------------------------------------------------------------


def build_realistic(path: Path, size_mib: int) -> str:
    """ext4 on a sparse file with OS trees copied in; returns a description."""
    with open(path, "wb") as f:
        f.truncate(size_mib * MiB)
    sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(path))
    device = sh("losetup", "--find", "--show", str(path)).strip()
    mnt = path.parent / "mnt"
    mnt.mkdir(exist_ok=True)
    try:
        sh("mount", device, str(mnt))
        try:
            # Each tree only while at least as much stays free: a disk with OS files and free space.
            copied: list[str] = []
            for tar in sorted(glob.glob(str(REPO / ".cache" / "rehost-images" / "*.tar")))[:2]:
                if 2 * os.path.getsize(tar) > shutil.disk_usage(mnt).free:
                    continue
                root = mnt / f"root{len(copied)}"
                root.mkdir()
                sh("tar", "-xf", tar, "-C", str(root), "--numeric-owner")
                copied.append(Path(tar).name)
            if copied:
                what = " + ".join(copied)
            else:
                sh("cp", "-a", "/usr", str(mnt / "usr"))
                what = "a copy of /usr"
            used = int(sh("df", "--output=used", "-B1", str(mnt)).split()[-1])
        finally:
            sh("umount", str(mnt))
    finally:
        sh("losetup", "-d", device)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # the loop device's writes, so their writeback does not land in the first timing
    finally:
        os.close(fd)
    return f"ext4, {used / MiB:.0f} MiB used ({what})"


def build_random(path: Path, size_mib: int) -> str:
    with open(path, "wb") as f:
        for _ in range(size_mib // 4):
            f.write(os.urandom(4 * MiB))
        os.fsync(f.fileno())
    return "os.urandom"


def rewrite_file(path: Path, rng: random.Random) -> int:
    """Rewrite 1% of the 4 KiB blocks at random offsets; returns how many."""
    blocks = path.stat().st_size // BLOCK
    chosen = rng.sample(range(blocks), blocks // 100)
    fd = os.open(path, os.O_WRONLY)
    try:
        for b in chosen:
            os.pwrite(fd, os.urandom(BLOCK), b * BLOCK)
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(chosen)


# -- yardsticks ------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.monotonic()
    out = fn()
    return time.monotonic() - t0, out


def dd_copy(src: Path, dst: Path) -> float:
    dst.unlink(missing_ok=True)
    t, _ = timed(lambda: sh("dd", f"if={src}", f"of={dst}", "bs=4M", "conv=fsync", "status=none"))
    dst.unlink()
    return t


def rsync(src: Path, dst: Path) -> tuple[float, int, int]:
    """Seconds, literal data bytes and total bytes sent (from --stats)."""
    t, out = timed(lambda: sh("rsync", "--inplace", "--no-whole-file", "-B4096", "--fsync", "--stats",
                              str(src), str(dst)))

    def stat(name: str) -> int:
        m = re.search(rf"{name}: ([\d,]+)", out)
        return int(m.group(1).replace(",", "")) if m else -1

    return t, stat("Literal data"), stat("Total bytes sent")


# -- the agent -------------------------------------------------------------------------------------------------


class Server:
    """A `rehost replication-server` subprocess with its data directory."""

    def __init__(self, data: Path) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.data = data
        self.key = load_or_create_key(data)
        self.ca = ensure_tls(data)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rehost.cli.main", "replication-server", "--data-dir", str(data), "--id",
             "rs-bench", "--port", "0", "--snapshot-interval", "0", "--log-level", "WARNING"],
            stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith("listening on "):
                self.port = int(line.rsplit(":", 1)[1])
                return
        raise SystemExit("replication server did not start")

    def staging(self, sid: str, name: str) -> Path:
        return self.data / "staging" / sid / f"{disk_key(name)}.img"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


class Agent:
    """The agent's data path for one disk: state directory, `DiskRun`, a TLS session per `connect`."""

    def __init__(self, server: Server, sid: str, state_dir: Path, disk: Disk) -> None:
        self.server, self.sid = server, sid
        self.state = AgentState(str(state_dir)).ensure()
        self.state.reset_for(sid)
        self.replication = self.state.replication()
        self.run = DiskRun(0, disk, self.state, self.replication["disks"].setdefault(disk.name, {}))
        self.client: ReplicationClient | None = None
        self.session: Session | None = None

    def connect(self) -> Session:
        self.client = ReplicationClient("127.0.0.1", self.server.port, self.server.ca, timeout=300).connect()
        self.session = Session(self.client, [self.run], self.state, self.replication, Throttle())
        self.session.hello(self.sid, server_token(self.server.key, self.sid))
        return self.session

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.run.close()


def agent_scan(server: Server, sid: str, state_dir: Path, image: Path, path: str | None = None,
               dev: tuple[int, int] | None = None) -> tuple[float, int]:
    """One agent start: HELLO and a full compare of the disk (the initial sync the first time, a rescan
    after); returns seconds and payload bytes sent."""
    disk = Disk(str(image), path or str(image), image.stat().st_size, False, dev)
    agent = Agent(server, sid, state_dir, disk)
    try:
        t0 = time.monotonic()
        session = agent.connect()
        assert session.full_scan(agent.run)
        return time.monotonic() - t0, session.bytes_sent
    finally:
        agent.close()


def direct_writes(device: str, blocks: list[int], marks: bool = False) -> None:
    fd = os.open(device, os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, BLOCK)
    try:
        for seq, b in enumerate(blocks):
            buf.seek(0)
            buf.write((MARK + seq.to_bytes(8, "little")) if marks else b"")
            buf.write(os.urandom(BLOCK - buf.tell()))
            os.pwritev(fd, [buf], b * BLOCK)
    finally:
        os.close(fd)
        buf.close()


def lag_writer(device: str, blocks: list[int], rate: float, out: Any) -> None:
    """The load (a separate process): paced O_DIRECT 4 KiB writes, each marked with its sequence number;
    sends (seq, block, monotonic time the write returned) per write."""
    fd = os.open(device, os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, BLOCK)
    start = time.monotonic()
    try:
        for seq, b in enumerate(blocks):
            delay = start + seq / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            buf.seek(0)
            buf.write(MARK + seq.to_bytes(8, "little") + os.urandom(BLOCK - len(MARK) - 8))
            os.pwritev(fd, [buf], b * BLOCK)
            out.put((seq, b, time.monotonic()))
    finally:
        os.close(fd)
        out.put(None)


def tracked(server: Server, sid: str, state_dir: Path, image: Path, rng: random.Random, lag_seconds: float,
            lag_rate: float, cycles: list[float]) -> dict[str, Any]:
    """Steps 5 and 6 on a loop device over `image` (the same disk name, digests and staging volume)."""
    device = sh("losetup", "--find", "--show", str(image)).strip()
    out: dict[str, Any] = {}
    try:
        st = os.stat(device)
        dev = (os.major(st.st_rdev), os.minor(st.st_rdev))
        disk = Disk(str(image), device, image.stat().st_size, False, dev)
        agent = Agent(server, sid, state_dir, disk)
        tracker = BlockTracker({0: dev}).start()
        try:
            session = agent.connect()
            assert session.full_scan(agent.run)  # nothing changed since the rescan: reads only
            out["resume_sent"] = session.bytes_sent
            tracker.take_dirty(0)
            nblocks = disk.size // BLOCK
            chosen = rng.sample(range(nblocks), nblocks // 100)
            direct_writes(device, chosen)
            want = len(set(chosen))
            dirty: dict[int, int] = {}
            deadline = time.monotonic() + 20
            while sum(bin(m).count("1") for m in dirty.values()) < want and time.monotonic() < deadline:
                time.sleep(0.05)
                for chunk, mask in tracker.take_dirty(0).items():
                    dirty[chunk] = dirty.get(chunk, 0) | mask
            before = session.bytes_sent
            t, _ = timed(lambda: (session.send_dirty(agent.run, dirty), session.flush()))
            out["tracked_s"], out["tracked_sent"] = t, session.bytes_sent - before
            out["lag"] = {
                cycle: measure_lag(session, agent, tracker, device, server.staging(sid, str(image)), rng,
                                   lag_seconds, lag_rate, cycle)
                for cycle in cycles
            }
            out["lost_events"] = tracker.take_lost(0)
            # Whatever the tracker may have missed: the final compare makes staging whole before the check.
            session.full_scan(agent.run)
        finally:
            tracker.stop()
            agent.close()
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
    return out


def measure_lag(session: Session, agent: Agent, tracker: BlockTracker, device: str, staging: Path,
                rng: random.Random, seconds: float, rate: float, cycle: float) -> list[float]:
    """Per-write lag under a steady load, replicating as `rehost.agent.runner.Agent._run_session` does for a
    tracked disk (take dirty, send, FLUSH, wait `cycle`)."""
    n = int(seconds * rate)
    blocks = rng.sample(range(agent.run.size // BLOCK), n)
    q: Any = mp.get_context("fork").Queue()
    writer = mp.get_context("fork").Process(target=lag_writer, args=(device, blocks, rate, q), daemon=True)
    outstanding: dict[int, tuple[int, float]] = {}
    lags: list[float] = []
    fd = os.open(staging, os.O_RDONLY)
    writer_done = False
    tracker.take_dirty(0)
    writer.start()
    try:
        end = time.monotonic() + seconds + 30
        while time.monotonic() < end and (not writer_done or outstanding):
            dirty = tracker.take_dirty(0)
            if dirty:
                session.send_dirty(agent.run, dirty)
            if session.unflushed():
                session.flush()
            acked = time.monotonic()
            while True:  # the writes whose pwrite returned so far
                try:
                    item = q.get_nowait()
                except Exception:
                    break
                if item is None:
                    writer_done = True
                    break
                outstanding[item[0]] = (item[1], item[2])
            for seq, (b, done) in list(outstanding.items()):
                if done < acked and os.pread(fd, len(MARK) + 8, b * BLOCK) == MARK + seq.to_bytes(8, "little"):
                    lags.append(acked - done)
                    del outstanding[seq]
            time.sleep(cycle)
    finally:
        os.close(fd)
        writer.join(timeout=30)
    if outstanding:
        print(f"  lag: {len(outstanding)} writes never seen replicated", file=sys.stderr)
    return lags


# -- the run ---------------------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def one_run(server: Server, work: Path, image: Path, run: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(1000 + run)
    sid = f"s-{zlib.crc32(image.name.encode()) % 0xFFFF:04x}{run:013x}"  # a fresh staging volume per run
    state = work / f"state-{image.stem}-{run}"
    r: dict[str, Any] = {"load": os.getloadavg()[0]}
    r["dd_s"] = dd_copy(image, work / "dd.img")
    copy = work / "rsync.img"
    copy.unlink(missing_ok=True)
    r["rsync_init_s"], _, r["rsync_init_sent"] = rsync(image, copy)
    r["agent_init_s"], r["agent_init_sent"] = agent_scan(server, sid, state, image)
    r["rewritten_blocks"] = rewrite_file(image, rng)
    r["rsync_s"], r["rsync_literal"], r["rsync_sent"] = rsync(image, copy)
    r["rescan_s"], r["rescan_sent"] = agent_scan(server, sid, state, image)
    if os.geteuid() == 0:
        r.update(tracked(server, sid, state, image, rng, args.lag_seconds, args.lag_rate, args.cycles))
    r["identical"] = sha_file(server.staging(sid, str(image))) == sha_file(image)
    copy.unlink()
    shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(server.staging(sid, str(image)).parent, ignore_errors=True)  # never used again
    for cycle, lag in r.pop("lag", {}).items():
        r[f"lag_n@{cycle}"] = len(lag)
        r[f"lag_p50@{cycle}"], r[f"lag_p99@{cycle}"] = percentile(lag, 50), percentile(lag, 99)
    print(f"  run {run}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in r.items()), flush=True)
    return r


Runs = list[dict[str, Any]]


def table(results: dict[str, Runs]) -> str:
    """Markdown: per measurement the median and (min-max) of each image's runs, then the aims' ratios."""

    def values(runs: Runs, key: str) -> list[float]:
        scale = MiB if key.endswith(("sent", "literal")) else 1
        return [float(r[key]) / scale for r in runs if key in r]

    def cell(runs: Runs, key: str, fmt: str) -> str:
        vals = values(runs, key)
        if not vals:
            return "-"
        return f"{fmt.format(statistics.median(vals))} ({fmt.format(min(vals))}-{fmt.format(max(vals))})"

    def med(runs: Runs, key: str) -> float:
        return statistics.median(values(runs, key))

    rows = [
        ("dd bs=4M conv=fsync, s", "dd_s", "{:.2f}"),
        ("rsync initial copy, s", "rsync_init_s", "{:.2f}"),
        ("agent initial sync, s", "agent_init_s", "{:.2f}"),
        ("agent initial sync, MiB sent", "agent_init_sent", "{:.0f}"),
        ("rsync -B4096 after 1% rewrite, s", "rsync_s", "{:.2f}"),
        ("rsync, MiB literal data", "rsync_literal", "{:.1f}"),
        ("rsync, MiB total sent", "rsync_sent", "{:.1f}"),
        ("agent rescan after 1% rewrite, s", "rescan_s", "{:.2f}"),
        ("agent rescan, MiB sent", "rescan_sent", "{:.1f}"),
        ("agent tracked (loop device), s", "tracked_s", "{:.2f}"),
        ("agent tracked, MiB sent", "tracked_sent", "{:.1f}"),
    ]
    first = next(iter(results.values()))[0]
    for key in sorted(k for k in first if k.startswith("lag_p")):
        p, cycle = key[4:].split("@")
        rows.append((f"lag {p}, s (send cycle {cycle} s)", key, "{:.2f}"))
    rows.append(("load average (1 min) at run start", "load", "{:.1f}"))
    lines = ["| measurement | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for label, key, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(cell(runs, key, fmt) for runs in results.values()) + " |")
    lines.append("")
    for name, runs in results.items():
        tracked = f", tracked {med(runs, 'rsync_s') / med(runs, 'tracked_s'):.1f}x" if "tracked_s" in runs[0] else ""
        lines.append(
            f"{name}: initial sync {med(runs, 'dd_s') / med(runs, 'agent_init_s'):.2f}x dd's speed, "
            f"rescan {med(runs, 'rsync_s') / med(runs, 'rescan_s'):.2f}x rsync's speed{tracked}; "
            f"staging identical in every run: {all(r['identical'] for r in runs)}"
        )
    return "\n".join(lines)


def size_name(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--realistic-mib", type=int, default=4096)
    ap.add_argument("--random-mib", type=int, default=2048)
    ap.add_argument("--lag-seconds", type=float, default=20.0)
    ap.add_argument("--lag-rate", type=float, default=200.0, help="4 KiB writes per second during the lag test")
    ap.add_argument("--cycles", type=lambda v: [float(x) for x in v.split(",")], default=[0.25],
                    help="seconds between tracked sends, comma-separated (the runner's default is 0.25)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--workdir", type=Path, default=REPO / ".cache" / "bench")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(__import__("tempfile").mkdtemp(prefix="replication-", dir=args.workdir))
    server: Server | None = None
    try:
        images = {}
        if args.realistic_mib:
            t, what = timed(lambda: build_realistic(work / "realistic.img", args.realistic_mib))
            images[f"realistic {size_name(args.realistic_mib)}"] = work / "realistic.img"
            print(f"realistic image: {what}, built in {t:.0f} s", flush=True)
        if args.random_mib:
            build_random(work / "random.img", args.random_mib)
            images[f"random {size_name(args.random_mib)}"] = work / "random.img"
        server = Server(work / "data")
        print(f"fast digest {FAST_ALGORITHM}; rsync {sh('rsync', '--version').split()[2]}; "
              f"{os.cpu_count()} cores", flush=True)
        results: dict[str, Runs] = {}
        for name, image in images.items():
            print(name, flush=True)
            results[name] = [one_run(server, work, image, run, args) for run in range(args.runs)]
        print(table(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
