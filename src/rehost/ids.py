"""Identifiers in MGN's formats: ``s-`` + 17 hex characters, ``mgnjob-``, ``rct-``, ``lct-``, ..."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime


def new_id(prefix: str) -> str:
    """A fresh ID: ``prefix-`` followed by 17 lower-case hex characters."""
    return f"{prefix}-{secrets.token_hex(9)[:17]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime | None) -> str | None:
    """MGN's timestamp strings: ``YYYY-MM-DDThh:mm:ss.ffffffZ`` (UTC)."""
    if ts is None:
        return None
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso_duration(seconds: float) -> str:
    """An ISO-8601 duration as MGN reports ``lagDuration``: ``PT1H2M3S``."""
    seconds = max(0, int(round(seconds)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    out = "P" + (f"{days}D" if days else "") + "T"
    if hours:
        out += f"{hours}H"
    if minutes:
        out += f"{minutes}M"
    out += f"{secs}S"
    return out
