"""``rehost server``: run the control plane."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType

from rehost.config import load_settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("server", help="run the control plane (MGN API, agent API, console)")
    p.add_argument("--data-dir", help="directory holding all state (default: $REHOST_DATA_DIR)")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port to listen on (default 8080)")
    p.add_argument("--region", default=None, help="the region in ARNs and SigV4 scopes (default us-east-1)")
    p.add_argument("--database-url", default=None, help="PostgreSQL URL instead of the data directory's SQLite")
    p.add_argument("--max-active-source-servers", type=int, default=None, help="quota of active source servers (150)")
    p.add_argument("--replication-port", type=int, default=None, help="first TCP port for replication servers (1500)")
    p.add_argument("--advertise-replication-host", default=None,
                   help="address agents use to reach replication servers, when it differs from --host "
                        "(e.g. the guestfwd address of a VM source)")
    p.add_argument("--api-rate-limit", type=float, default=None,
                   help="requests per second per access key on the MGN API before ThrottlingException "
                        "(default 100; 0 disables)")
    p.add_argument("--monitor-interval", type=float, default=None,
                   help="seconds between checks for dead replication servers and silent agents (default 5)")
    p.add_argument("--agent-silence-seconds", type=float, default=None,
                   help="seconds without a call from an agent before its replication is STALLED (default 60)")
    p.add_argument("--job-snapshot-timeout", type=float, default=None,
                   help="seconds a launch job waits for the agent's snapshot before using the previous one "
                        "(default 600)")
    p.add_argument("--snapshot-interval", type=float, default=None,
                   help="seconds between the replication servers' own point-in-time snapshots while data "
                        "changes (default 600, MGN's 10 minutes)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from rehost.server import build_server_app

    settings = load_settings(
        data_dir=args.data_dir, host=args.host, port=args.port, region=args.region, database_url=args.database_url,
        active_source_servers=args.max_active_source_servers, replication_port=args.replication_port,
        advertised_replication_host=args.advertise_replication_host, api_rate_limit=args.api_rate_limit,
        monitor_interval=args.monitor_interval, agent_silence_seconds=args.agent_silence_seconds,
        job_snapshot_timeout=args.job_snapshot_timeout, snapshot_interval=args.snapshot_interval,
    )
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app, cp = build_server_app(settings)
    print(f"rehost control plane for account {cp.account.account_id} in {settings.region}: "
          f"http://{settings.host}:{settings.port}", file=sys.stderr, flush=True)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler installed
    # before it: by default that kills the process on the spot, and the replication servers this control
    # plane started would outlive it. This handler turns it into an exit that runs cp.close() first; the
    # process then ends at once, as it did, rather than waiting for a job in progress (a restart fails
    # such a job with JOB_CANCEL).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    except _Terminated:
        cp.close()
        logging.shutdown()
        sys.stderr.flush()
        os._exit(0)
    finally:
        cp.close()
    return 0


class _Terminated(BaseException):
    """SIGTERM, after uvicorn's graceful shutdown."""


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()
