"""The shape of a boot loader fixer: its edits are computed read-only, then `plan` lists and `fix` writes them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rehost.conversion.edits import keep_original
from rehost.conversion.fstab import Rename, fix_cmdline


@dataclass(frozen=True)
class FileEdit:
    path: Path
    text: str
    note: str


class BootLoaderFixer(Protocol):
    name: str

    def detect(self, root: Path) -> bool: ...

    def plan(self, root: Path, rename: Rename) -> list[str]: ...

    def fix(self, root: Path, rename: Rename) -> list[str]: ...


class EditFixer:
    """A fixer defined by `edits`: the files it would rewrite, with their new text."""

    name = ""

    def detect(self, root: Path) -> bool:
        raise NotImplementedError

    def edits(self, root: Path, rename: Rename) -> list[FileEdit]:
        raise NotImplementedError

    def plan(self, root: Path, rename: Rename) -> list[str]:
        return [e.note for e in self.edits(root, rename)]

    def fix(self, root: Path, rename: Rename) -> list[str]:
        notes = []
        for e in self.edits(root, rename):
            keep_original(e.path)
            e.path.write_text(e.text)
            notes.append(e.note)
        return notes


def fix_lines(text: str, pattern: re.Pattern[str], rename: Rename) -> str:
    """``text`` with the command line in group 2 of every ``pattern`` match fixed (`fix_cmdline`); group 1
    is kept, and a group 3 if the pattern has one (a closing quote). A command line that is ``$kernelopts``
    alone is left: it is grubenv's, fixed there."""
    def repl(m: re.Match[str]) -> str:
        args = m.group(2)
        tail = m.group(3) if m.re.groups >= 3 and m.group(3) else ""
        return m.group(1) + (args if args.strip() == "$kernelopts" else fix_cmdline(args, rename)) + tail

    return pattern.sub(repl, text)
