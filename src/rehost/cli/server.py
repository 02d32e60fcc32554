"""``rehost server``: run the control plane."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType

from rehost.config import Settings, load_settings
from rehost.errors import InvalidInput


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
    p.add_argument("--launch-boot-timeout", type=float, default=None,
                   help="seconds a launched instance has to boot (a login prompt, systemd's multi-user "
                        "target, or an ingress port answering) before its launch fails (default 300)")
    p.add_argument("--snapshot-interval", type=float, default=None,
                   help="seconds between the replication servers' own point-in-time snapshots while data "
                        "changes (default 600, MGN's 10 minutes)")
    p.add_argument("--target", default=None, metavar="URL",
                   help="the built-in target 'local': qemu:///local (rehost's own QEMU, the default) or a libvirt "
                        "URL such as qemu:///system; `rehost target add` adds more ($REHOST_TARGET)")
    p.add_argument("--tls", action="store_true",
                   help="serve HTTPS with a certificate signed by the data directory's CA (clients trust "
                        "DATA_DIR/tls/ca.pem, the CA the replication servers use)")
    p.add_argument("--tls-cert", default=None, help="serve HTTPS with this PEM certificate chain (with --tls-key)")
    p.add_argument("--tls-key", default=None, help="the PEM private key of --tls-cert")
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
        launch_boot_timeout=args.launch_boot_timeout, target=args.target,
    )
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cert = _tls_files(args, settings)
    app, cp = build_server_app(settings)
    scheme = "https" if cert else "http"
    print(f"rehost control plane for account {cp.account.account_id} in {settings.region}: "
          f"{scheme}://{settings.host}:{settings.port}", file=sys.stderr, flush=True)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler installed
    # before it: by default that kills the process on the spot, and the replication servers this control
    # plane started would outlive it. This handler turns it into an exit that runs cp.close() first; the
    # process then ends at once, as it did, rather than waiting for a job in progress (a restart fails
    # such a job with JOB_CANCEL).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        # proxy_headers=False: no proxy stands in front, so X-Forwarded-For/-Proto are not believed (uvicorn
        # would take them from loopback clients): aws:SourceIp and the sign-in throttle see the real peer.
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                    ssl_certfile=cert[0] if cert else None, ssl_keyfile=cert[1] if cert else None,
                    proxy_headers=False)
    except _Terminated:
        cp.close()
        logging.shutdown()
        sys.stderr.flush()
        os._exit(0)
    finally:
        cp.close()
    return 0


def _tls_files(args: argparse.Namespace, settings: Settings) -> tuple[str, str] | None:
    """(certificate, key) to serve HTTPS with, or None for plain HTTP. Without a certificate of the
    operator's own, the replication servers' certificate is used: signed by the data directory's CA, for
    localhost, 127.0.0.1, --host and --advertise-replication-host."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise InvalidInput("--tls-cert and --tls-key go together")
    if args.tls_cert:
        for path in (args.tls_cert, args.tls_key):
            if not os.path.isfile(path):
                raise InvalidInput(f"{path}: no such file")
        return args.tls_cert, args.tls_key
    if not args.tls:
        return None
    from rehost.replication.tls import SERVER_CERT, SERVER_KEY, ensure_tls, tls_dir

    hosts = tuple(h for h in (settings.host, settings.advertised_replication_host) if h and h != "0.0.0.0")
    ensure_tls(settings.data_dir, extra_hosts=hosts)
    folder = tls_dir(settings.data_dir)
    return str(folder / SERVER_CERT), str(folder / SERVER_KEY)


class _Terminated(BaseException):
    """SIGTERM, after uvicorn's graceful shutdown."""


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()
