"""What every guest edit shares: originals are kept beside the files conversion rewrites, and notes name
files as the guest does."""

from __future__ import annotations

import shutil
from pathlib import Path

SUFFIX = ".rehost-source"


def keep_original(path: Path, aside: Path | None = None) -> None:
    """Copy ``path`` to ``path.rehost-source`` (or into the directory ``aside``) unless already kept there:
    the first copy is the source's file, later conversions of the same tree never overwrite it."""
    if aside is None:
        kept = path.with_name(path.name + SUFFIX)
    else:
        aside.mkdir(parents=True, exist_ok=True)
        kept = aside / path.name
    if path.exists() and not kept.exists():
        shutil.copy2(path, kept)


def rel(root: Path, path: Path) -> str:
    """The guest's name for ``path`` (``/etc/...``)."""
    return "/" + str(path.relative_to(root))
