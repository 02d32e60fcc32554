"""Shared fixtures: tests scrub REHOST_* variables and use temporary data directories."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _scrub_rehost_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REHOST_"):
            monkeypatch.delenv(name, raising=False)
