"""``python -m rehost.images build|boot``: the demo's source server from a shell (root only).

    python -m rehost.images build --output source.img [--flavor web] [--authorized-keys key.pub]
    python -m rehost.images boot source.img --run-dir run/ [--service 1500:41234 ...]

``boot`` prints one JSON line ({"pid", "ssh_port", "http_port", "serial_log"}) and leaves the VM running;
stop it with ``kill <pid>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rehost.errors import RehostError
from rehost.images.builder import FLAVOR_PACKAGES, build_source_image, default_cache_dir
from rehost.images.sourcevm import boot_source_vm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehost.images")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or reuse the cached tree of) a bootable Debian source image")
    b.add_argument("--output", type=Path, required=True)
    b.add_argument("--cache-dir", type=Path, default=None,
                   help="cached debootstrap trees (default: $REHOST_IMAGE_CACHE, else /var/cache/rehost-images as root)")
    b.add_argument("--flavor", choices=tuple(FLAVOR_PACKAGES), default="web")
    b.add_argument("--size-gib", type=float, default=2)
    b.add_argument("--hostname", default="rehost-source")
    b.add_argument("--authorized-keys", type=Path, help="public key file for root's authorized_keys")
    b.add_argument("--marker", help="text shown on the site's index page")
    r = sub.add_parser("boot", help="boot an image as the source VM (IDE disk, e1000 NIC)")
    r.add_argument("image", type=Path)
    r.add_argument("--run-dir", type=Path, required=True)
    r.add_argument("--memory-mib", type=int, default=1024)
    r.add_argument("--service", action="append", default=[], metavar="GUEST_PORT:HOST_PORT",
                   help="make 127.0.0.1:HOST_PORT reachable from the guest at 10.0.2.100:GUEST_PORT")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.cmd == "build":
            keys = args.authorized_keys.read_text() if args.authorized_keys else None
            out = build_source_image(args.cache_dir or default_cache_dir(), args.output, size_gib=args.size_gib, flavor=args.flavor,
                                     hostname=args.hostname, authorized_keys=keys, marker=args.marker)
            print(out)
        else:
            services = {int(g): int(h) for g, h in (s.split(":", 1) for s in args.service)}
            vm = boot_source_vm(args.image, args.run_dir, memory_mib=args.memory_mib, host_services=services)
            print(json.dumps({"pid": vm.pid, "ssh_port": vm.ssh_port, "http_port": vm.http_port,
                              "serial_log": str(vm.serial_log)}))
    except (RehostError, OSError, ValueError) as exc:
        print(f"rehost.images: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
