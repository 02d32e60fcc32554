"""Conversion per storage layout: pre-flight, conversion and boot to the page (root; QEMU under TCG).

    .venv/bin/python bench/conversion_layouts.py [--runs 1] [--layouts bios uefi lvm rhel btrfs]

Per layout and run: build the source disks (cached trees), time the loop-mount path's start-up (every
volume attached and the root mounted read-only, what a helper VM's appliance start stands against), the
pre-flight inspection, the conversion (its copy / edit / qcow2 split, from its own note), and the converted
disks' boot on the QEMU target until the page is served. Prints each figure and the medians.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rehost.conversion import convert, storage
from rehost.conversion.inspect import inspect_disks
from rehost.images.builder import build_source_image, default_cache_dir
from rehost.images.layouts import build_layout_image
from rehost.images.sourcevm import wait_http
from rehost.targets.base import LaunchSpec, new_instance_id
from rehost.targets.qemu import QemuTarget

MARKER = "rehost-bench-page"


def disks_for(layout: str, work: Path) -> dict[str, Path]:
    if layout in ("bios", "uefi"):
        image = build_source_image(default_cache_dir(), work / f"{layout}.img", size_gib=1, flavor="minimal",
                                   marker=MARKER, firmware=layout)  # type: ignore[arg-type]
        return {"/dev/sda": image}
    return build_layout_image(default_cache_dir(), work, layout, marker=MARKER)  # type: ignore[arg-type]


def one_run(layout: str, work: Path) -> dict[str, float]:
    fig: dict[str, float] = {}
    disks = disks_for(layout, work)
    paths = list(disks.values())
    t = time.monotonic()
    with storage.attached(paths, work, read_only=True) as st, tempfile.TemporaryDirectory() as tmp:
        st.find_root(Path(tmp))
        fig["attach + mount root (loop path start-up)"] = time.monotonic() - t
    t = time.monotonic()
    result = inspect_disks(paths, "/dev/sda", list(disks)[1:], work)
    assert result.convertible, result.reason
    fig["pre-flight"] = time.monotonic() - t
    t = time.monotonic()
    converted = convert(paths[0], "/dev/sda", work / "conversion", other_disks=list(disks.items())[1:])
    fig["conversion"] = time.monotonic() - t
    split = next(n for n in converted.notes if "converted in" in n)
    for name in ("copy", "edit", "qcow2"):
        if m := re.search(rf"{name} ([\d.]+) s", split):
            fig[f"  {name}"] = float(m.group(1))
    target = QemuTarget(work / "instances", accel="tcg")
    iid = new_instance_id()
    t = time.monotonic()
    try:
        inst = target.launch(LaunchSpec(iid, "t3.small", 2, 1024, converted.path, (80,),
                                         data_disks=converted.data_disks,
                                         boot_mode="uefi" if converted.boot_modes == {"UEFI"} else "legacy-bios"))
        wait_http(inst.url(80), 600, expect=MARKER)
        fig["boot to page (virtio)"] = time.monotonic() - t
    finally:
        target.terminate(iid)
    return fig


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--layouts", nargs="+", default=["bios", "uefi", "lvm", "rhel", "btrfs"])
    args = ap.parse_args()
    for layout in args.layouts:
        runs = []
        for i in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="rehost-layoutbench-", dir="/var/tmp") as tmp:
                runs.append(one_run(layout, Path(tmp)))
            print(f"{layout} run {i + 1}: " + ", ".join(f"{k.strip()} {v:.1f} s" for k, v in runs[-1].items()),
                  flush=True)
        print(f"{layout} medians: " + ", ".join(f"{k.strip()} {statistics.median(r[k] for r in runs):.1f} s"
                                                for k in runs[0]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
