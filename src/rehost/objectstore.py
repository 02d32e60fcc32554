"""Object storage for the files MGN reads from and writes to S3: import files and exports.

MGN names a file as an S3 bucket and key (StartImport's ``s3BucketSource``, StartExport's ``s3Bucket`` and
``s3Key``). rehost resolves them against an `ObjectStore`: by default `DirectoryObjectStore`, a directory
per bucket under the data directory (``<data-dir>/buckets/<bucket>/<key>``). The interface is the four
calls below, so an S3-compatible endpoint can be configured later by implementing them with an S3 client;
nothing else in rehost touches the files.

As S3, a bucket must exist before anything is read from or written to it: the operator creates one with
``rehost bucket create`` (or puts a file with ``rehost bucket put``, which creates its bucket).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from rehost.errors import InvalidInput, NotFound

# S3's bucket naming rules (3-63 characters: lower-case letters, digits, dots and hyphens, starting and
# ending with a letter or digit, no two dots in a row).
BUCKET_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{1,61})[a-z0-9]$")
MAX_OBJECT_BYTES = 64 * 1024 * 1024


class ObjectStore(Protocol):
    """Where buckets and their objects live."""

    def get(self, bucket: str, key: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes:
        """The object's bytes; NotFound if the bucket or the key does not exist, InvalidInput if it is
        larger than ``max_bytes``."""

    def put(self, bucket: str, key: str, data: bytes) -> None:
        """Store the object (replacing any); NotFound if the bucket does not exist."""

    def create_bucket(self, bucket: str) -> None:
        """Create the bucket if it does not exist."""

    def list(self, bucket: str) -> list[tuple[str, int]]:
        """The bucket's keys and their sizes, sorted; NotFound if the bucket does not exist."""


def check_bucket(bucket: str) -> str:
    if not BUCKET_NAME.match(bucket or "") or ".." in bucket:
        raise InvalidInput(f"Bucket name {bucket!r} is not valid: 3-63 lower-case letters, digits, dots and "
                           "hyphens, starting and ending with a letter or digit.")
    return bucket


def check_key(key: str) -> str:
    parts = (key or "").split("/")
    if not key or len(key.encode()) > 1024 or "\x00" in key or "\\" in key \
            or any(part in ("", ".", "..") for part in parts):
        raise InvalidInput(f"Object key {key!r} is not valid: 1-1024 bytes of path segments separated by '/', "
                           "none empty, '.' or '..'.")
    return key


class DirectoryObjectStore:
    """Buckets as directories under ``root``; objects as files (0600, written atomically)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _bucket_dir(self, bucket: str, *, must_exist: bool = True) -> Path:
        path = self.root / check_bucket(bucket)
        if must_exist and not path.is_dir():
            raise NotFound(f"Bucket {bucket} does not exist.", resource_id=bucket, resource_type="BUCKET")
        return path

    def get(self, bucket: str, key: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes:
        path = self._bucket_dir(bucket) / check_key(key)
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size > max_bytes:
                    raise InvalidInput(f"s3://{bucket}/{key} is larger than {max_bytes} bytes.")
                return f.read(max_bytes + 1)[:max_bytes]
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"s3://{bucket}/{key} does not exist.", resource_id=f"{bucket}/{key}",
                           resource_type="S3_OBJECT") from None

    def put(self, bucket: str, key: str, data: bytes) -> None:
        path = self._bucket_dir(bucket) / check_key(key)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InvalidInput(f"s3://{bucket}/{key}: a prefix of the key is an object.") from None
        if path.is_dir():
            raise InvalidInput(f"s3://{bucket}/{key}: the key is a prefix of other objects.")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def create_bucket(self, bucket: str) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._bucket_dir(bucket, must_exist=False).mkdir(mode=0o700, exist_ok=True)

    def list(self, bucket: str) -> list[tuple[str, int]]:
        base = self._bucket_dir(bucket)
        return sorted((str(p.relative_to(base)), p.stat().st_size) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith(".upload-"))


def for_data_dir(data_dir: Path) -> DirectoryObjectStore:
    """The default object store of a data directory (what `rehost server` and `rehost bucket` use)."""
    return DirectoryObjectStore(Path(data_dir) / "buckets")
