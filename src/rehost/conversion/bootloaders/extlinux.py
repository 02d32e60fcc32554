"""extlinux / syslinux: ``APPEND`` lines of its configuration."""

from __future__ import annotations

import re
from pathlib import Path

from rehost.conversion.bootloaders.base import EditFixer, FileEdit, fix_lines
from rehost.conversion.edits import rel
from rehost.conversion.fstab import Rename

CONFIGS = ("boot/extlinux/extlinux.conf", "boot/syslinux/syslinux.cfg", "extlinux.conf", "boot/extlinux.conf",
           "syslinux/syslinux.cfg", "extlinux/extlinux.conf")
_APPEND = re.compile(r"^(\s*append[ \t]+)(.*?)[ \t]*$", re.M | re.I)


class Extlinux(EditFixer):
    name = "extlinux"

    def detect(self, root: Path) -> bool:
        return any((root / c).is_file() for c in CONFIGS)

    def edits(self, root: Path, rename: Rename) -> list[FileEdit]:
        out = []
        for c in CONFIGS:
            if not (root / c).is_file():
                continue
            text = (root / c).read_text(errors="replace")
            if (new := fix_lines(text, _APPEND, rename)) != text:
                out.append(FileEdit(root / c, new, f"boot loader: {rel(root, root / c)}: kernel command line "
                                    "for the target (root by UUID, net.ifnames=0, serial console)"))
        return out
