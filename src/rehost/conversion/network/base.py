"""The shape every network fixer shares: a list of planned changes, each a note and an action.

A fixer computes its changes from the guest's files (read-only); `plan` returns their notes and `fix`
applies them and returns the same notes, so the pre-flight inspection shows exactly what a conversion will
do. Changes are computed from the current files, so after `fix` there are none left (idempotence).
Originals are kept with the ``.rehost-source`` suffix, or in a ``<dir>.rehost-source`` directory beside
the configuration directory where the stack would read a suffixed copy as one more configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rehost.conversion.edits import SUFFIX, keep_original

#: The target's one NIC: conversion puts ``net.ifnames=0`` on the kernel command line.
TARGET_NIC = "eth0"


@dataclass(frozen=True)
class Change:
    """One change a fixer would make: ``note`` (one line for the job log) and ``apply`` (does it)."""

    note: str
    apply: Callable[[], None]


class NetworkFixer(Protocol):
    """One network stack's configuration: does the guest have it, what would change, change it."""

    name: str

    def detect(self, root: Path) -> bool:
        """True when this stack is configured on the guest mounted at ``root`` (read-only)."""

    def plan(self, root: Path) -> list[str]:
        """What `fix` would change, one line each (read-only)."""

    def fix(self, root: Path) -> list[str]:
        """Make the changes `plan` lists and return the same lines; a second call returns []."""


class ChangeFixer:
    """A fixer defined by `changes`: `plan` and `fix` are the notes and actions of the same list."""

    name = ""

    def detect(self, root: Path) -> bool:
        raise NotImplementedError

    def changes(self, root: Path) -> list[Change]:
        raise NotImplementedError

    def plan(self, root: Path) -> list[str]:
        return [c.note for c in self.changes(root)] if self.detect(root) else []

    def fix(self, root: Path) -> list[str]:
        if not self.detect(root):
            return []
        notes = []
        for change in self.changes(root):
            change.apply()
            notes.append(change.note)
        return notes


def move_aside(path: Path, aside: Path | None = None) -> None:
    """Keep the original (see `keep_original`) and remove ``path``, so the stack no longer reads it."""
    keep_original(path, aside)
    path.unlink()


def write(path: Path, text: str, aside: Path | None = None) -> None:
    """Keep the original of ``path`` and write ``text`` there, keeping its permissions (0600 when new:
    NetworkManager and netplan refuse or warn about readable files)."""
    keep_original(path, aside)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o600
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def aside_dir(directory: Path) -> Path:
    """Where originals of ``directory``'s files go when a suffixed copy would still be read."""
    return directory.with_name(directory.name + SUFFIX)


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def ini_entries(lines: list[str]) -> list[tuple[int, str, str, str]]:
    """(line index, section, key, value) of every ``key=value`` line of an INI-style file (systemd units,
    NetworkManager keyfiles); comments (``#``, ``;``) and blank lines are skipped."""
    out, section = [], ""
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("[") and s.endswith("]"):
            section = s[1:-1].strip()
        elif "=" in s:
            key, _, value = s.partition("=")
            out.append((i, section, key.strip(), value.strip()))
    return out


def section_lines(lines: list[str], section: str) -> list[int]:
    """Indexes of the lines of every ``[section]`` (header included)."""
    out, current = [], ""
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            current = s[1:-1].strip()
        if current == section:
            out.append(i)
    return out
