"""Per-source-server replication tokens (standard library only; the agent may import it).

``token = hmac_sha256(D/replication.key, source_server_id).hexdigest()``. The control plane hands the token to
the agent; the replication server re-computes it knowing only the key, so a token for server A never
authorises writes to server B's volumes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from rehost.errors import ReplicationError

KEY_FILE = "replication.key"
KEY_SIZE = 32


def server_token(key: bytes, source_server_id: str) -> str:
    """Return the replication token (64 lowercase hex characters) of ``source_server_id``."""
    return hmac.new(key, source_server_id.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_token(key: bytes, source_server_id: str, token: str) -> bool:
    """True when ``token`` is the token of ``source_server_id`` (constant-time comparison)."""
    expected = server_token(key, source_server_id)
    return hmac.compare_digest(expected.encode("ascii"), token.encode("utf-8", "replace"))


def load_or_create_key(data_dir: Path) -> bytes:
    """Return the HMAC key in ``D/replication.key``, creating it (32 random bytes, mode 0600) if missing.

    Creation is atomic (a temporary file linked into place), so the control plane and a replication server
    starting at the same moment end up with the same key.
    """
    path = Path(data_dir) / KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, os.urandom(KEY_SIZE))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process won the race: then its key is the key
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) < 16:
        raise ReplicationError(f"{path} holds {len(key)} bytes; a replication key needs at least 16")
    return key
