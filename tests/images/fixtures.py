"""Session fixtures: real Debian source images, built once per session from the cached debootstrap tree.

The tree is cached under the repository's ``.cache/rehost-images`` (git-ignored), so only the first run
on a machine pays for debootstrap (about 90 s); each image then takes a few seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rehost.images.builder import build_source_image

CACHE_DIR = Path(__file__).resolve().parents[2] / ".cache" / "rehost-images"
MARKER = "converted-by-rehost-test"


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices, mount, chroot)")


@pytest.fixture(scope="session")
def minimal_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only reference copy of the minimal flavor (1.5 GiB, IDE/e1000, /dev/sda1, static MAC-pinned
    network, site on port 80 with `MARKER`). Tests copy it before booting it."""
    need_root()
    out = tmp_path_factory.mktemp("source-image") / "minimal.img"
    return build_source_image(CACHE_DIR, out, size_gib=1.5, flavor="minimal", marker=MARKER,
                              hostname="legacy-web-01")
