"""Source image, conversion and boot times (root; QEMU under TCG).

    .venv/bin/python bench/conversion_bench.py [--runs 3] [--flavor minimal] [--size-gib 1]

Per run: build the source image from the cached debootstrap tree, boot it on IDE + e1000 until its site
answers, convert it (loop mounts + chroot), launch it on the QEMU target (virtio) until the site answers.
Prints each figure per run and the medians. The first run on a machine also pays for debootstrap.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rehost.conversion import convert
from rehost.images.builder import build_source_image, cached_tree
from rehost.images.sourcevm import boot_source_vm, wait_http
from rehost.targets.base import LaunchSpec, new_instance_id
from rehost.targets.qemu import QemuTarget

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "rehost-images"


def one_run(work: Path, flavor: str, size_gib: float) -> dict[str, float]:
    fig: dict[str, float] = {}
    t = time.monotonic()
    image = build_source_image(CACHE, work / "source.img", size_gib=size_gib, flavor=flavor)  # type: ignore[arg-type]
    fig["image build (cached tree)"] = time.monotonic() - t

    t = time.monotonic()
    vm = boot_source_vm(image, work / "source-run")
    try:
        vm.wait_http(600)
        fig["source boot to HTTP (IDE, e1000)"] = time.monotonic() - t
    finally:
        vm.stop()

    t = time.monotonic()
    converted = convert(image, "/dev/sda", work / "conversion")
    fig["conversion"] = time.monotonic() - t

    target = QemuTarget(work / "instances", accel="tcg")
    iid = new_instance_id()
    t = time.monotonic()
    try:
        inst = target.launch(LaunchSpec(iid, "t3.micro", 1, 1024, converted.path, (22, 80)))
        wait_http(inst.url(80), 600)
        fig["target boot to HTTP (virtio)"] = time.monotonic() - t
    finally:
        target.terminate(iid)
    return fig


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--flavor", default="minimal", choices=("minimal", "web"))
    ap.add_argument("--size-gib", type=float, default=1)
    args = ap.parse_args()
    t = time.monotonic()
    cached_tree(CACHE, args.flavor)
    print(f"debootstrap tree ready in {time.monotonic() - t:.1f} s (0 if cached)")
    runs: list[dict[str, float]] = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="rehost-convbench-") as tmp:
            fig = one_run(Path(tmp), args.flavor, args.size_gib)
        runs.append(fig)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in fig.items()), flush=True)
    print("medians: " + ", ".join(f"{k} {statistics.median(r[k] for r in runs):.1f} s" for k in runs[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
