"""Byte-store backends: ``get_backend(url)`` picks the one that owns a URL."""

from __future__ import annotations

from rehost.chunkstore.backends.base import Backend, ObjectNotFound
from rehost.chunkstore.backends.posixfs import PosixFS
from rehost.errors import InvalidInput


def get_backend(url: str, *, create: bool = True) -> Backend:
    """The backend for ``url``: ``file:///abs/path`` or a plain path (a local directory).

    ``s3://`` will join when the S3 backend exists; unknown schemes raise InvalidInput.
    """
    if url.startswith("file://"):
        return PosixFS(url[len("file://") :], create=create)
    if "://" not in url:
        return PosixFS(url, create=create)
    raise InvalidInput(f"no chunk store backend for {url!r} (supported: file://, a local path)")


__all__ = ["Backend", "ObjectNotFound", "PosixFS", "get_backend"]
