"""``rehost demo``: the seed's migration, end to end, on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="migrate a real running web server end to end, as the hands-on does")
    p.add_argument("--work-dir", type=Path, default=Path(".cache/demo"),
                   help="where images (cached between runs), VMs and the demo's data directory go")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where debootstrap trees are cached between runs (default: $REHOST_IMAGE_CACHE, else "
                        "/var/cache/rehost-images as root)")
    # WordPress (the hands-on's own server) is not yet the default: no run of it has reached the cutover.
    p.add_argument("--flavor", default="web", choices=["web", "wordpress", "minimal"],
                   help="source image flavor (web: nginx; wordpress: the hands-on's WordPress site on Apache, PHP, "
                        "MariaDB, not yet verified through cutover)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rehost.demo.flow import main

    return main(args.work_dir.resolve(), args.flavor, args.cache_dir.resolve() if args.cache_dir else None)
