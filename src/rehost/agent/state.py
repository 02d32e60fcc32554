"""The agent's state directory (default /var/lib/rehost-agent).

```
identity.json      source server ID, endpoint, region, the chosen disks (written by the installer)
credentials.json   the access key the agent signs with, issued to it at registration (mode 0600)
replication.json   the last sequence number used and, per disk, the last one the server acknowledged
                   and whether its initial sync completed
digests/<disk>.digests   per-chunk digests of what the server holds durably (rescan.DigestStore)
agent.log          the agent's log when it runs as a service
```
Every JSON file is replaced atomically (write, fsync, rename), so a crash leaves the old or the new one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from rehost.agent.discovery import Disk
from rehost.agent.sigv4 import Credentials
from rehost.errors import InvalidInput
from rehost.fsutil import atomic_write

DEFAULT_STATE_DIR = "/var/lib/rehost-agent"


def disk_key(device_name: str) -> str:
    """A file name for a disk, as the replication server names its staging volume (``/dev/sda`` -> ``dev_sda``)."""
    key = re.sub(r"[^A-Za-z0-9._-]", "_", device_name.strip("/").replace("/", "_"))
    return key if key.strip(".") else "disk"


def _write_json(path: str, doc: Any, mode: int = 0o644) -> None:
    atomic_write(Path(path), json.dumps(doc, indent=1, sort_keys=True).encode(), mode)
    os.chmod(path, mode)  # whatever the umask took away


def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise InvalidInput(f"The agent state file {path} is corrupt: {exc}") from exc


class AgentState:
    """Reads and writes the files of one state directory. Not thread-safe: one agent process owns it."""

    def __init__(self, root: str = DEFAULT_STATE_DIR) -> None:
        self.root = root
        self.digest_dir = os.path.join(root, "digests")

    def ensure(self) -> AgentState:
        os.makedirs(self.digest_dir, mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        return self

    # -- identity and credentials ----------------------------------------------------------------------------

    def identity(self) -> dict[str, Any] | None:
        return _read_json(os.path.join(self.root, "identity.json"))

    def save_identity(self, identity: dict[str, Any]) -> None:
        _write_json(os.path.join(self.root, "identity.json"), identity)

    def credentials(self) -> Credentials | None:
        doc = _read_json(os.path.join(self.root, "credentials.json"))
        if not doc:
            return None
        return Credentials(doc["accessKeyId"], doc["secretAccessKey"], doc.get("sessionToken"))

    def save_credentials(self, creds: Credentials) -> None:
        doc = {"accessKeyId": creds.access_key_id, "secretAccessKey": creds.secret_access_key}
        if creds.session_token:
            doc["sessionToken"] = creds.session_token
        _write_json(os.path.join(self.root, "credentials.json"), doc, mode=0o600)

    def disks(self) -> list[Disk]:
        """The disks the installer chose, as saved in identity.json."""
        identity = self.identity() or {}
        out = []
        for d in identity.get("disks", []):
            dev = tuple(d["dev"]) if d.get("dev") else None
            out.append(Disk(d["name"], d["path"], int(d["size"]), bool(d.get("isBoot")), dev))  # type: ignore[arg-type]
        return out

    @staticmethod
    def disk_doc(disk: Disk) -> dict[str, Any]:
        return {
            "name": disk.name,
            "path": disk.path,
            "size": disk.size,
            "isBoot": disk.is_boot,
            "dev": list(disk.dev) if disk.dev else None,
        }

    # -- replication progress --------------------------------------------------------------------------------

    def replication(self) -> dict[str, Any]:
        doc = _read_json(os.path.join(self.root, "replication.json")) or {}
        doc.setdefault("seq", 0)
        doc.setdefault("disks", {})
        return doc

    def save_replication(self, doc: dict[str, Any]) -> None:
        _write_json(os.path.join(self.root, "replication.json"), doc)

    def digest_path(self, disk: Disk) -> str:
        return os.path.join(self.digest_dir, disk_key(disk.name) + ".digests")

    def reset_for(self, source_server_id: str) -> None:
        """Forget replication progress that belonged to another source server (a new registration)."""
        doc = self.replication()
        if doc.get("sourceServerID") not in (None, source_server_id):
            for name in os.listdir(self.digest_dir):
                os.unlink(os.path.join(self.digest_dir, name))
            doc = {"seq": doc.get("seq", 0), "disks": {}}
        doc["sourceServerID"] = source_server_id
        self.save_replication(doc)
