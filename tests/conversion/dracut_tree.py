"""A small Debian tree whose initramfs is made by dracut (the RHEL shape), cached like the image trees.

debootstrap (minbase), then ``apt-get install dracut linux-image-amd64`` in a chroot (apt picks dracut for
the kernel's ``initramfs-tools | linux-initramfs-tool`` dependency, which debootstrap's resolver would
not), then the image rebuilt *without* the virtio drivers, as a host-only image built on the source's
hardware would be. The tree is cached as a tarball under the image cache dir: the first build takes a few
minutes, later runs extract it in seconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from rehost.conversion.blockdev import chroot, chroot_mounts, run
from rehost.images.builder import SUITE, debian_mirror

PACKAGES = ("dracut", "linux-image-amd64")
#: Bump when the recipe below changes, so the cached tree is rebuilt.
RECIPE = "1"
OMIT = "virtio_blk virtio_pci virtio_scsi virtio_net virtio_console"


def cached_dracut_tree(cache_dir: Path) -> Path:
    """Return the tarball of the dracut tree, building it if missing."""
    mirror = debian_mirror()
    key = hashlib.sha256(json.dumps([SUITE, mirror, PACKAGES, RECIPE]).encode()).hexdigest()[:16]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / f"debian-{SUITE}-dracut-{key}.tar"
    if tarball.exists():
        return tarball
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="build-dracut-") as tmp:
        tree = Path(tmp) / "tree"
        run(["debootstrap", "--variant=minbase", SUITE, str(tree), mirror], timeout=1800)
        with chroot_mounts(tree):
            chroot(tree, ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES], timeout=1800)
            ver = sorted(p.name.removeprefix("vmlinuz-") for p in (tree / "boot").glob("vmlinuz-*"))[-1]
            for old in (tree / "boot").glob("init*"):
                old.unlink()
            chroot(tree, ["dracut", "-f", "--no-hostonly", "--omit-drivers", OMIT, "--kver", ver,
                          f"/boot/initrd.img-{ver}"], timeout=1800)
            chroot(tree, ["apt-get", "clean"])
        shutil.rmtree(tree / "var/lib/apt/lists", ignore_errors=True)
        partial = tarball.with_suffix(".partial")
        run(["tar", "-C", str(tree), "--numeric-owner", "--xattrs", "-cf", str(partial), "."], timeout=1800)
        partial.rename(tarball)
        for old in cache_dir.glob(f"debian-{SUITE}-dracut-*.tar"):
            if old != tarball:
                old.unlink(missing_ok=True)
    return tarball
