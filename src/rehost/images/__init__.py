"""Demo and test source servers: build a real Debian image (`build_source_image`) and boot it on its own,
non-virtio hardware (`boot_source_vm`). ``python -m rehost.images --help`` does both from a shell."""

from __future__ import annotations

from rehost.images.builder import SITE_MARKER, SOURCE_MAC, ImageBuildError, build_source_image, cached_tree
from rehost.images.sourcevm import SERVICE_IP, SourceVM, boot_source_vm, wait_http

__all__ = ["SERVICE_IP", "SITE_MARKER", "SOURCE_MAC", "ImageBuildError", "SourceVM", "boot_source_vm",
           "build_source_image", "cached_tree", "wait_http"]
