"""``rehost replication-server``: run one replication server (started by the control plane, or by hand).

Prints ``listening on HOST:PORT`` on stderr once it accepts connections (the control plane waits for that
line), logs to stderr, and stops cleanly on SIGTERM or SIGINT: each session finishes the frame it is
reading, then everything is closed.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from rehost.errors import InvalidInput
from rehost.replication.protocol import DEFAULT_PORT


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "replication-server",
        help="run a replication server (receives agents' block streams, takes snapshots)",
        description="Receive replicated disks over TLS into staging volumes and snapshot them.",
    )
    parser.add_argument("--data-dir", required=True, type=Path, help="rehost data directory")
    parser.add_argument("--id", required=True, dest="server_id", help="replication server ID (rs-...)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0 = any)"
    )
    parser.add_argument(
        "--snapshot-interval",
        type=float,
        default=600.0,
        help="seconds between periodic snapshots when data changed (default 600; 0 disables)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=float,
        default=10.0,
        help="seconds from accepting a connection to its verified HELLO, TLS handshake included (default 10)",
    )
    parser.add_argument(
        "--max-pending",
        type=int,
        default=64,
        help="connections not yet authenticated held at once; another one closes the oldest of the address "
        "holding the most (default 64)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here so `rehost --help` does not load cryptography
    from rehost.replication.server import ReplicationServer, ServerConfig
    from rehost.replication.tls import server_context

    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", args.server_id):
        raise InvalidInput(f"invalid replication server ID {args.server_id!r}")
    if not 0 <= args.port <= 65535:
        raise InvalidInput(f"invalid port {args.port}")
    if args.snapshot_interval < 0:
        raise InvalidInput("--snapshot-interval must not be negative")
    if not args.handshake_timeout > 0:
        raise InvalidInput("--handshake-timeout must be positive")
    if args.max_pending < 1:
        raise InvalidInput("--max-pending must be at least 1")
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format=f"%(asctime)s {args.server_id} %(levelname)s %(name)s: %(message)s",
    )
    data_dir: Path = args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    config = ServerConfig(
        data_dir=data_dir,
        server_id=args.server_id,
        host=args.host,
        port=args.port,
        snapshot_interval=args.snapshot_interval,
        handshake_timeout=args.handshake_timeout,
        max_pending=args.max_pending,
    )
    server = ReplicationServer(config, server_context(data_dir))
    _, port = server.start()  # the actual port (--port 0 picks one)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # the configured host, not getsockname's: the control plane waits for exactly "listening on HOST:PORT"
    print(f"listening on {args.host}:{port}", file=sys.stderr, flush=True)
    while not stop.wait(1.0):
        pass
    logging.getLogger(__name__).info("stopping")
    server.stop()
    return 0
