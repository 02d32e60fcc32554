"""Entry point of the `rehost` command.

Each command group lives in its own module (``rehost.cli.<group>``) that exposes
``register(subparsers) -> None``; its subcommands set ``func(args) -> int``. Errors of the
`RehostError` tree become one line on stderr and their exit code: never a traceback for a user's mistake.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from rehost.errors import RehostError

GROUPS = ("server", "iam", "replication_server", "snapshot", "target", "demo", "bucket", "preflight")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rehost", description="Self-hosted lift-and-shift migration (MGN-compatible).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in GROUPS:
        try:
            module = importlib.import_module(f"rehost.cli.{group}")
        except ModuleNotFoundError as exc:
            if exc.name == f"rehost.cli.{group}":
                continue  # a command group not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Everything rehost writes (the data directory's database, keys, disks, logs; exports) is its user's
    # alone: 0600 files and 0700 directories unless a mode is given explicitly. Inherited by the
    # replication servers and QEMU processes it starts.
    os.umask(0o077)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RehostError as exc:
        print(f"rehost: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
