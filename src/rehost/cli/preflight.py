"""``rehost preflight SERVER_ID``: what a launch of the server would do, or why it would fail.

Shows the pre-flight the control plane made of the server's newest snapshot; ``--now`` inspects it again
here (as root) and ``--snapshot-id`` inspects any retained snapshot. Exit code 0 when a launch would convert
the snapshot, 1 when it would fail, 2 for a mistake (unknown server or snapshot, not inspected yet).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from rehost.errors import InvalidInput


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("preflight", help="what a launch of a source server would do, or why it would fail")
    p.add_argument("source_server_id", metavar="SERVER_ID")
    p.add_argument("--snapshot-id", default=None, help="inspect this retained snapshot now (default: the newest)")
    p.add_argument("--now", action="store_true", help="inspect the newest snapshot now rather than show the "
                                                      "control plane's last pre-flight")
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.add_argument("--data-dir", default=os.environ.get("REHOST_DATA_DIR"), metavar="D")
    p.add_argument("--database-url", default=None, help="PostgreSQL URL instead of the data directory's SQLite")
    p.set_defaults(func=cmd_preflight)


def cmd_preflight(args: argparse.Namespace) -> int:
    from rehost.config import load_settings
    from rehost.db import repo
    from rehost.db.store import Store
    from rehost.jobs import preflight

    if not args.data_dir:
        raise InvalidInput("--data-dir (or REHOST_DATA_DIR) is required")
    settings = load_settings(data_dir=Path(args.data_dir),
                             database_url=args.database_url or os.environ.get("REHOST_DATABASE_URL"))
    store = Store(settings.db_url)
    try:
        with store.read() as conn:
            server = repo.load_server(conn, args.source_server_id)  # NotFound: one clear line
        if args.snapshot_id or args.now:
            doc = _inspect_now(settings.data_dir, server, args.snapshot_id)
        else:
            stored = preflight.load(store, args.source_server_id)
            if stored is None:
                raise InvalidInput(f"{args.source_server_id} has not been inspected yet (it has no snapshot, or the "
                                   "control plane does not run as root); try --now")
            doc = stored
    finally:
        store.close()
    print(json.dumps(doc, indent=2) if args.output == "json" else _text(doc))
    return 0 if doc.get("convertible") else 1


def _inspect_now(data_dir: Path, server: dict[str, Any], snapshot_id: str | None) -> dict[str, Any]:
    from rehost import ids
    from rehost.chunkstore.snapshots import SnapshotStore
    from rehost.conversion import SnapshotConverter
    from rehost.jobs import preflight
    from rehost.jobs.interfaces import SnapshotRef

    if os.geteuid() != 0:
        raise InvalidInput("inspecting a snapshot needs root (loop devices and read-only mounts)")
    server_id = server["sourceServerID"]
    with SnapshotStore.open(data_dir, create=False) as store:
        snap = store.get(server_id, snapshot_id) if snapshot_id else store.latest(server_id)
    if snap is None:
        raise InvalidInput(f"{server_id} has no snapshot yet")
    ref = SnapshotRef(snap.source_server_id, snap.snapshot_id, snap.taken_at, dict(snap.disks))
    device = preflight.boot_device(server, ref)
    if device is None:
        raise InvalidInput(f"snapshot {ref.snapshot_id} has no disk")
    result = SnapshotConverter(data_dir).inspect(ref, device, data_dir / "work")
    return {**result, "sourceServerID": server_id, "snapshotID": ref.snapshot_id,
            "inspectedDateTime": ids.iso(ids.utcnow())}


def _text(doc: dict[str, Any]) -> str:
    head = f"{doc['sourceServerID']} snapshot {doc['snapshotID']} (inspected {doc.get('inspectedDateTime', '')}): "
    if not doc.get("convertible"):
        return head + f"a launch would FAIL: {doc.get('reason')}"
    lines = [head + "a launch would convert and boot it",
             f"  operating system: {doc.get('os_name')}", f"  root: {doc.get('root')}",
             f"  firmware the boot disk allows: {', '.join(doc.get('boot_modes') or [])}",
             f"  boot loaders: {', '.join(doc.get('boot_loaders') or [])}",
             f"  initramfs: {doc.get('initramfs')}", f"  network: {', '.join(doc.get('network') or []) or '-'}",
             "  what conversion would change:"]
    return "\n".join(lines + [f"    {line}" for line in doc.get("plan") or []])
