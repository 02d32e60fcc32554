"""`rehost snapshot`: list, export, verify and create snapshots in a data directory's chunk store."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from rehost.chunkstore.export import FORMATS
from rehost.chunkstore.snapshots import SnapshotStore
from rehost.errors import InvalidInput, NotFound, SnapshotError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("snapshot", help="list, export, verify and create snapshots")
    sub = parser.add_subparsers(dest="snapshot_command", metavar="SUBCOMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list a source server's snapshots, newest first")
    p.add_argument("source_server_id", metavar="SOURCE_SERVER_ID")
    p.add_argument("--output", choices=("table", "json"), default="table")
    _data_dir(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("export", help="write one disk of a snapshot to a raw or qcow2 file")
    p.add_argument("source_server_id", metavar="SOURCE_SERVER_ID")
    p.add_argument("--disk", required=True, metavar="DEVICE", help="device name, e.g. /dev/sda")
    p.add_argument("--snapshot", metavar="ID", help="snapshot ID (default: the newest)")
    p.add_argument("--output", required=True, metavar="FILE")
    p.add_argument("--format", choices=FORMATS, default="raw")
    _data_dir(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("verify", help="re-read and re-hash every stored chunk")
    _data_dir(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("gc", help="remove chunks no snapshot references and compact packs")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for running snapshots")
    _data_dir(p)
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("create", help="take a snapshot now (through the running rehost server)")
    p.add_argument("source_server_id", metavar="SOURCE_SERVER_ID")
    p.add_argument("--sync", action="store_true", help="rescan untracked disks before the snapshot")
    _data_dir(p)
    p.set_defaults(func=cmd_create)


def _data_dir(p: argparse.ArgumentParser) -> None:
    default = os.environ.get("REHOST_DATA_DIR")
    p.add_argument("--data-dir", default=default, required=default is None, metavar="D")


def _open(args: argparse.Namespace) -> SnapshotStore:
    return SnapshotStore.open(Path(args.data_dir), create=False)


def _snapshot_json(snap: Any) -> dict[str, Any]:
    return {
        "snapshotID": snap.snapshot_id,
        "sourceServerID": snap.source_server_id,
        "takenAt": snap.taken_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "disks": [{"deviceName": d, "bytes": size} for d, size in snap.disks.items()],
    }


def cmd_list(args: argparse.Namespace) -> int:
    with _open(args) as store:
        snaps = store.list(args.source_server_id)
    if not snaps:
        raise NotFound(
            f"source server {args.source_server_id} has no snapshots", resource_type="source-server"
        )
    if args.output == "json":
        print(json.dumps({"snapshots": [_snapshot_json(s) for s in snaps]}, indent=2))
        return 0
    rows = [
        (
            s.snapshot_id,
            s.taken_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            ", ".join(f"{d} ({n} B)" for d, n in s.disks.items()),
        )
        for s in snaps
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(("SNAPSHOT ID", "TAKEN AT"))]
    print(f"{'SNAPSHOT ID':<{widths[0]}}  {'TAKEN AT':<{widths[1]}}  DISKS")
    for sid, when, disks in rows:
        print(f"{sid:<{widths[0]}}  {when:<{widths[1]}}  {disks}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _open(args) as store:
        snapshot_id = args.snapshot
        if snapshot_id is None:
            newest = store.latest(args.source_server_id)
            if newest is None:
                raise NotFound(f"source server {args.source_server_id} has no snapshots")
            snapshot_id = newest.snapshot_id
        output = Path(args.output)
        if not output.parent.is_dir():
            raise InvalidInput(f"output directory {output.parent} does not exist")
        store.export(args.source_server_id, snapshot_id, args.disk, output, args.format)
    print(f"exported {args.disk} of {snapshot_id} to {output} ({args.format})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with _open(args) as store:
        report = store.verify()
    for bad in report.bad_chunks:
        users = ", ".join(f"{s}/{snap}" for s, snap in bad.snapshots) or "no snapshot"
        print(f"bad chunk {bad.digest}: {bad.reason} (used by {users})")
    for name, reason in report.bad_manifests:
        print(f"bad manifest {name}: {reason}")
    if not report.ok:
        raise SnapshotError(
            f"verify found {len(report.bad_chunks)} bad chunk(s) and {len(report.bad_manifests)} bad manifest(s)"
        )
    print(f"ok: {report.chunks_checked} chunks in {report.manifests_checked} snapshots verified")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    with _open(args) as store:
        stats = store.gc(timeout=args.timeout)
    print(
        f"removed {stats.chunks_removed} chunks; deleted {stats.packs_deleted} and rewrote "
        f"{stats.packs_rewritten} packs; freed {stats.bytes_freed} bytes"
    )
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    from rehost.config import load_settings
    from rehost.controlplane import request_snapshot

    settings = load_settings(data_dir=args.data_dir, database_url=os.environ.get("REHOST_DATABASE_URL"))
    snapshot_id = request_snapshot(settings, args.source_server_id, args.sync)
    print(snapshot_id)
    return 0
