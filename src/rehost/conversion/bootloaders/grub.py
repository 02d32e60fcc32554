"""GRUB 2 as Debian and Ubuntu install it (``/boot/grub``) and as RHEL and Fedora do (``/boot/grub2``).

The generated ``grub.cfg`` is edited directly (its ``linux``/``linuxefi``/``linux16`` lines, and RHEL 8's
``set kernelopts=`` fallback), its ``grubenv``'s ``kernelopts`` (what ``$kernelopts`` expands to), and
``/etc/default/grub`` too, so a later ``update-grub`` or
``grub2-mkconfig`` on the target keeps the change. ``GRUB_DISABLE_LINUX_UUID=true`` would make the next
regeneration name the root by device again: it is turned off.
"""

from __future__ import annotations

import re
from pathlib import Path

from rehost.conversion.bootloaders.base import EditFixer, FileEdit, fix_lines
from rehost.conversion.bootloaders.bls import fix_grubenv
from rehost.conversion.edits import rel
from rehost.conversion.fstab import Rename

_LINUX = re.compile(r"^(\s*linux(?:efi|16)?\s+\S+[ \t]*)(.*?)[ \t]*$", re.M)
_KERNELOPTS = re.compile(r'^(\s*set\s+kernelopts=")([^"]*)(")', re.M)
_DEFAULT = re.compile(r'^(GRUB_CMDLINE_LINUX=")([^"]*)(")', re.M)


class _Grub(EditFixer):
    directory = ""

    def detect(self, root: Path) -> bool:
        return (root / self.directory / "grub.cfg").is_file()

    def edits(self, root: Path, rename: Rename) -> list[FileEdit]:
        out = []
        cfg = root / self.directory / "grub.cfg"
        text = cfg.read_text(errors="replace")
        if (new := fix_lines(fix_lines(text, _LINUX, rename), _KERNELOPTS, rename)) != text:
            out.append(FileEdit(cfg, new, f"boot loader: {rel(root, cfg)}: kernel command lines for the "
                                "target (root by UUID, net.ifnames=0, serial console)"))
        env = root / self.directory / "grubenv"
        if env.is_file() and not env.is_symlink():  # a link into the ESP (RHEL 8 on UEFI) is not reachable
            new_env = fix_grubenv(env.read_text(errors="replace"), rename)
            if new_env is not None:
                out.append(FileEdit(env, new_env, f"boot loader: {rel(root, env)}: kernelopts for the target"))
        default = root / "etc/default/grub"
        if default.is_file():
            text = default.read_text(errors="replace")
            new = fix_lines(text, _DEFAULT, rename).replace("GRUB_DISABLE_LINUX_UUID=true",
                                                            "GRUB_DISABLE_LINUX_UUID=false")
            if new != text:
                out.append(FileEdit(default, new, "boot loader: /etc/default/grub command line for the target"))
        return out


class GrubDebian(_Grub):
    name = "GRUB 2 (/boot/grub)"
    directory = "boot/grub"


class GrubRedHat(_Grub):
    name = "GRUB 2 (/boot/grub2)"
    directory = "boot/grub2"

    def edits(self, root: Path, rename: Rename) -> list[FileEdit]:
        # /etc/default/grub is shared with GrubDebian on a root that has both directories: edit it once.
        edits = super().edits(root, rename)
        if (root / "boot/grub/grub.cfg").is_file():
            edits = [e for e in edits if e.path != root / "etc/default/grub"]
        return edits
