"""``python -m rehost.agent`` and the one-file installer's entry point.

``rehost-replication-installer-init [flags]`` installs and registers (see `rehost.agent.installer`);
``rehost-replication-installer-init agent --state-dir D`` runs the installed agent (what the service runs).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rehost.agent.state import DEFAULT_STATE_DIR
from rehost.errors import RehostError

PROG = "rehost-replication-installer-init"


def run_agent(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"{PROG} agent", description="Run the installed rehost agent.")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    parser.add_argument("--ca-bundle")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from rehost.agent.installer import run_foreground

    try:
        return run_foreground(args.state_dir, args.ca_bundle)
    except RehostError as exc:
        sys.stderr.write(f"{PROG}: error: {exc.message}\n")
        return exc.exit_code or 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "agent":
        return run_agent(args[1:])
    from rehost.agent.installer import main as installer_main

    return installer_main(args)


if __name__ == "__main__":
    sys.exit(main())
