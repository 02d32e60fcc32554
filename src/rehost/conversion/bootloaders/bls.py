"""BootLoaderSpec entries (``/boot/loader/entries/*.conf``, RHEL 8+, Fedora), and GRUB's environment block.

Each entry's ``options`` line is the kernel command line; on RHEL 8 it may be ``$kernelopts``, whose
value lives in ``grubenv`` (``/boot/grub2/grubenv``, fixed by `rehost.conversion.bootloaders.grub`): a
1024-byte block of ``name=value`` lines padded with ``#``, rewritten at exactly that size (`fix_grubenv`).
"""

from __future__ import annotations

import re
from pathlib import Path

from rehost.conversion.bootloaders.base import EditFixer, FileEdit, fix_lines
from rehost.conversion.edits import rel
from rehost.conversion.fstab import Rename, fix_cmdline

_OPTIONS = re.compile(r"^(options[ \t]+)(.*?)[ \t]*$", re.M)
GRUBENV_SIZE = 1024


class BootLoaderSpec(EditFixer):
    name = "BootLoaderSpec entries"

    def detect(self, root: Path) -> bool:
        return any((root / "boot/loader/entries").glob("*.conf"))

    def edits(self, root: Path, rename: Rename) -> list[FileEdit]:
        out = []
        for entry in sorted((root / "boot/loader/entries").glob("*.conf")):
            text = entry.read_text(errors="replace")
            if (new := fix_lines(text, _OPTIONS, rename)) != text:
                out.append(FileEdit(entry, new, f"boot loader: {rel(root, entry)}: options for the target"))
        return out


def fix_grubenv(text: str, rename: Rename) -> str | None:
    """The environment block with ``kernelopts`` fixed, still 1024 bytes; None when nothing changes or it
    would not fit (then GRUB would refuse the block)."""
    lines = [line for line in text.split("\n") if line and not line.startswith("#")]
    changed = False
    for i, line in enumerate(lines):
        if line.startswith("kernelopts="):
            new = "kernelopts=" + fix_cmdline(line.removeprefix("kernelopts="), rename)
            changed |= new != line
            lines[i] = new
    if not changed:
        return None
    body = "# GRUB Environment Block\n" + "".join(line + "\n" for line in lines)
    if len(body.encode()) > GRUBENV_SIZE:
        return None
    return body + "#" * (GRUBENV_SIZE - len(body.encode()))
