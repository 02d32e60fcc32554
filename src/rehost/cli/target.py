"""``rehost target add/list/remove/default``: the targets instances run on (EC2 availability zones).

Targets are kept in the control-plane database, so a running `rehost server` uses a target as soon as it is
added. A URL is checked here (one line and exit code 2 if it is not one rehost can use); whether its host
answers is found at its first use, and ``list --check`` asks each one now.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from rehost.launch.placement import Target, Targets


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("target", help="add, list and remove the targets instances run on")
    tsub = parser.add_subparsers(dest="target_command", metavar="SUBCOMMAND")
    tsub.required = True

    p = tsub.add_parser("add", help="add a target: qemu:///local, or a libvirt URL (qemu:///system, "
                                    "qemu+ssh://host/system, qemu+unix:///system?socket=PATH)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("url", metavar="URL")
    p.add_argument("--network", default="", help="the libvirt network instances join unless their launch "
                                                 "template's subnet names another (default: default)")
    p.add_argument("--pool", default="", help="the libvirt storage pool (a directory pool) instances' disks "
                                              "are uploaded to (default: default)")
    p.add_argument("--default", action="store_true", help="make it the default target")
    _common(p)
    p.set_defaults(func=cmd_add)

    p = tsub.add_parser("list", help="list the targets with their availability zones")
    p.add_argument("--check", action="store_true", help="connect to each target and show whether it answers")
    p.add_argument("--output", choices=("table", "json"), default="table")
    _common(p)
    p.set_defaults(func=cmd_list)

    p = tsub.add_parser("remove", help="remove a target that runs no instance")
    p.add_argument("name", metavar="NAME")
    _common(p)
    p.set_defaults(func=cmd_remove)

    p = tsub.add_parser("default", help="make a target the default (new servers' launch templates use it)")
    p.add_argument("name", metavar="NAME")
    _common(p)
    p.set_defaults(func=cmd_default)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=os.environ.get("REHOST_DATA_DIR"), metavar="D")
    p.add_argument("--database-url", default=None, help="PostgreSQL URL instead of the data directory's SQLite")


def _targets(args: argparse.Namespace) -> Targets:
    from rehost.config import load_settings
    from rehost.db.store import Store
    from rehost.targets.registry import open_driver

    settings = load_settings(data_dir=args.data_dir, database_url=args.database_url)
    store = Store(settings.db_url)

    def opener(target: Target) -> Any:
        return open_driver(target.url, name=target.name, data_dir=settings.data_dir, accel=settings.accel,
                           network=target.network, pool=target.pool)

    return Targets(store, settings.region, opener, builtin_url=settings.target)


def _row(target: Target) -> dict[str, Any]:
    return {"name": target.name, "url": target.url, "availabilityZone": target.zone,
            "network": target.network or "-", "pool": target.pool or "-", "default": target.default}


def cmd_add(args: argparse.Namespace) -> int:
    target = _targets(args).add(args.name, args.url, network=args.network, pool=args.pool, default=args.default)
    print(f"added target {target.name} ({target.url}) as availability zone {target.zone}"
          + (", the default" if target.default else ""))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    targets = _targets(args)
    rows = [_row(t) for t in targets.configured()]
    if args.check:
        status = {t.name: why for t, why in targets.zones()}
        for row in rows:
            row["status"] = f"unreachable: {status[row['name']]}" if status[row["name"]] else "available"
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["name", "url", "availabilityZone", "network", "pool", "default"] + (["status"] if args.check else [])
    table = [[str(r[c]) if c != "default" else ("*" if r[c] else "") for c in cols] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in table)) for i, c in enumerate(cols)]
    for line in [[c.upper() for c in cols], *table]:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    _targets(args).remove(args.name)
    print(f"removed target {args.name}")
    return 0


def cmd_default(args: argparse.Namespace) -> int:
    target = _targets(args).set_default(args.name)
    print(f"default target: {target.name} ({target.url}), availability zone {target.zone}")
    return 0
