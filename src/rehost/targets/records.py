"""What every target driver keeps on this host about its instances: one ``<dir>/<i-id>/instance.json``
each, written atomically and 0600 (it names the instance's disks and user data), from which a new driver
re-attaches after a restart, and which stays describable after termination until purged."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from rehost.errors import NotFound, TargetError


class InstanceRecords:
    """A driver's instance records under ``self.dir``, guarded by ``self._lock`` (set by the driver)."""

    dir: Path
    _lock: threading.RLock

    def _rec_path(self, instance_id: str) -> Path:
        return self.dir / instance_id / "instance.json"

    def _load(self, instance_id: str) -> dict[str, Any]:
        try:
            return dict(json.loads(self._rec_path(instance_id).read_text()))
        except FileNotFoundError:
            raise NotFound(f"The instance ID '{instance_id}' does not exist", resource_id=instance_id,
                           resource_type="instance") from None
        except ValueError as exc:
            raise TargetError(f"instance record of {instance_id} is damaged: {exc}") from exc

    def _save(self, rec: dict[str, Any]) -> None:
        # 0600 whatever the umask: the record names the instance's disks and user data
        path = self._rec_path(rec["instance_id"])
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(rec, indent=1, sort_keys=True))
        tmp.replace(path)

    def purge_terminated(self, older_than: float, only: Collection[str] | None = None) -> tuple[str, ...]:
        """Delete the directories (record, console output) of instances terminated more than
        ``older_than`` seconds ago (of those in ``only`` if given), as EC2 forgets a terminated instance
        after a while; their disks went at termination. Returns the IDs purged; `describe` then raises
        NotFound for them."""
        purged: tuple[str, ...] = ()
        with self._lock:
            for path in self.dir.glob("i-*/instance.json"):
                if only is not None and path.parent.name not in only:
                    continue
                try:
                    rec = self._load(path.parent.name)
                    ended = rec.get("terminated_at") or path.stat().st_mtime  # a failed launch has none
                except (NotFound, TargetError, OSError):
                    continue
                if rec["state"] == "terminated" and time.time() - ended >= older_than:
                    shutil.rmtree(path.parent, ignore_errors=True)
                    purged += (path.parent.name,)
        return purged
