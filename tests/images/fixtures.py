"""Session fixtures: real Debian source images, built once per session from the cached debootstrap tree.

The tree is cached where `default_cache_dir` says (``$REHOST_IMAGE_CACHE``, else
``/var/cache/rehost-images`` as root: outside the clone, so CI on one machine builds it once), so only the
first run on a machine pays for debootstrap (about 90 s); each image then takes a few seconds.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rehost.images.builder import build_source_image, default_cache_dir

CACHE_DIR = default_cache_dir()
MARKER = "converted-by-rehost-test"


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices, mount, chroot)")


@pytest.fixture(scope="session")
def minimal_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only reference copy of the minimal flavor (1 GiB, IDE/e1000, /dev/sda1, static MAC-pinned
    network, site on port 80 with `MARKER`). Tests copy it before booting it."""
    need_root()
    d = tmp_path_factory.mktemp("source-image")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "id_ed25519")], check=True)
    return build_source_image(CACHE_DIR, d / "minimal.img", size_gib=1, flavor="minimal", marker=MARKER,
                              hostname="legacy-web-01",
                              authorized_keys=(d / "id_ed25519.pub").read_text())


def ssh(image: Path, port: int, command: str, timeout: float = 60) -> str:
    """Run ``command`` as root on a VM booted from (a copy of) ``image``, reached at 127.0.0.1:port."""
    proc = subprocess.run(
        ["ssh", "-i", str(image.parent / "id_ed25519"), "-p", str(port), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
         "-o", "LogLevel=ERROR", "root@127.0.0.1", command],
        capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"ssh {command!r} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout
