"""What every guest edit shares: originals are kept beside the files conversion rewrites."""

from __future__ import annotations

import shutil
from pathlib import Path

SUFFIX = ".rehost-source"


def backup(path: Path) -> None:
    """Copy ``path`` to ``path.rehost-source`` once: the first copy is the source's file, later conversions
    of the same tree never overwrite it."""
    kept = path.with_name(path.name + SUFFIX)
    if path.exists() and not kept.exists():
        shutil.copy2(path, kept)
