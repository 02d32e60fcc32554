"""The byte-store backend interface: objects stored whole under a name.

A backend is the only layer that touches the storage medium. Names are relative paths made of
``/``-separated parts (``packs/3f/3f9a...``, ``manifests/s-.../snap-...``); each part is non-empty and
never ``.`` or ``..``. The interface is kept small so an S3-compatible backend fits it: objects are
written whole (no append, no in-place update) and read whole or by byte range.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator

from rehost.errors import NotFound, StorageError

_PART = re.compile(r"^[A-Za-z0-9_.-]+$")


class ObjectNotFound(NotFound):
    """The backend holds no object of that name."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"no object named {name!r} in the chunk store", resource_id=name, resource_type="object"
        )


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid object or namespace name, else raise StorageError."""
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") or not _PART.match(p) for p in parts):
        raise StorageError(f"invalid object name {name!r}")
    return name


class Backend(ABC):
    """Stores bytes by name. Implementations must be safe for concurrent use by several processes.

    Guarantees every implementation gives (the contract suite in tests/chunkstore checks them):

    - ``put`` is atomic and durable: once it returns, the whole object is stored and survives a crash;
      a reader never sees a partly written object; a crash during ``put`` leaves the old object (or none).
    - ``get`` returns exactly the bytes last put, or the ``length`` bytes at ``offset`` (fewer only at the
      end of the object); it raises ``ObjectNotFound`` for a missing name.
    - ``delete`` removes the object; deleting a missing name raises ``ObjectNotFound``.
    - ``list(namespace)`` yields the names of the objects and sub-namespaces directly inside a namespace
      (the last part only, unsorted); a missing namespace yields nothing.
    - Errors of the medium become ``StorageError``, chained to the original.
    """

    @abstractmethod
    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` under ``name``, replacing any object of that name, atomically and durably."""

    @abstractmethod
    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """The object's bytes, or ``length`` bytes from ``offset`` (all to the end if ``length`` is None)."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove the object ``name``."""

    @abstractmethod
    def exists(self, name: str) -> bool:
        """Whether an object ``name`` is stored."""

    @abstractmethod
    def list(self, namespace: str) -> Iterator[str]:
        """The names directly inside ``namespace`` (objects and sub-namespaces), last part only."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing open
        """Release resources; the backend is not used afterwards."""
