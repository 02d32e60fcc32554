"""Receive throughput of `rehost replication-server` over TLS 1.3 on loopback.

Starts the real server as a subprocess in a temporary data directory, streams ``--gib`` GiB of
incompressible RAW writes of ``--write-size`` bytes with the protocol's blocking client, and times until
the FLUSH_ACK (so the figure includes fdatasync of the staging file). Prints one line per run.

    .venv/bin/python bench/replication_server_throughput.py --gib 2 --write-size 4194304 --runs 3

Measured 2026-11 on the 2-core development machine while other engineers' tests ran (load 2-7), client
and server on the same two cores: 0.39-0.72 GiB/s median to FLUSH_ACK with 4 MiB writes, 0.46-0.57 GiB/s
with 64 KiB writes; received and applied (before fdatasync) up to 0.68 GiB/s. The first run into a fresh
sparse staging file is slower (0.2 GiB/s: block allocation). A profile of the server's session thread
shows OpenSSL's record decryption (``SSLSocket.read``, 16 KiB records) at ~75% of its time, pwrite into
the page cache ~10%, and the Python framing (FrameReader, decode, dirty bitmap) under 10%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rehost.replication import protocol as p
from rehost.replication.auth import load_or_create_key, server_token
from rehost.replication.tls import ensure_tls

SID = "s-0000000000000bench"


def start_server(data_dir: Path) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    cmd = [sys.executable, "-m", "rehost.cli.main", "replication-server", "--data-dir", str(data_dir)]
    cmd += ["--id", "rs-bench", "--port", "0", "--snapshot-interval", "0", "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("listening on "):
            host, port = line.split()[-1].rsplit(":", 1)
            return proc, (host, int(port))
    raise SystemExit("server did not start")


def run_once(
    data_dir: Path, address: tuple[str, int], ca_pem: str, key: bytes, total: int, size: int
) -> float:
    pattern = os.urandom(size + 4096)
    with p.ReplicationClient(address[0], address[1], ca_pem=ca_pem).connect() as c:
        c.hello(SID, server_token(key, SID), [p.DiskInfo("/dev/sda", total)])
        start = time.perf_counter()
        for i, off in enumerate(range(0, total, size)):
            shift = (i * 64) % 4096  # different bytes each write, no per-write allocation of random data
            c.write(0, off, pattern[shift : shift + size])
        c.ping()  # every write received and applied (page cache), not yet synced
        applied = time.perf_counter() - start
        c.flush(1)
        total_s = time.perf_counter() - start
        print(
            f"  received+applied {total / applied / (1 << 30):.2f} GiB/s; fdatasync at FLUSH {total_s - applied:.2f} s"
        )
        return total_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--write-size", type=int, default=p.MAX_DATA)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    total = int(args.gib * (1 << 30)) // args.write_size * args.write_size
    with tempfile.TemporaryDirectory(prefix="rehost-bench-") as tmp:
        data_dir = Path(tmp)
        key, ca_pem = load_or_create_key(data_dir), ensure_tls(data_dir)
        proc, address = start_server(data_dir)
        try:
            rates = []
            for run in range(args.runs):
                seconds = run_once(data_dir, address, ca_pem, key, total, args.write_size)
                rates.append(total / seconds / (1 << 30))
                print(
                    f"run {run + 1}: {total / (1 << 30):.2f} GiB in {seconds:.2f} s = {rates[-1]:.2f} GiB/s"
                )
            print(
                f"median {statistics.median(rates):.2f} GiB/s  (TLS 1.3 loopback, RAW writes of "
                f"{args.write_size} B, timed to FLUSH_ACK)"
            )
        finally:
            proc.terminate()
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
