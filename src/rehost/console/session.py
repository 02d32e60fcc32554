"""Console sessions: a signed cookie naming a server-side session, and CSRF tokens.

What a caller may rely on:
- The cookie carries only a random session ID and its HMAC (key: ``<data-dir>/console.key``, 32 random
  bytes created 0600). The access key's secret is checked once at sign-in and never stored in the session,
  the cookie or any page; each request re-reads the key from the IAM store, so a deleted or deactivated
  key ends its sessions at once.
- Sessions live in the control-plane database (``console_sessions``, keyed by the SHA-256 of the session
  ID, so the table alone names no cookie): they outlive a restart, and every `rehost server` process
  sharing the database knows them, with their pending messages. They expire after `SESSION_TTL`.
- Every form carries the session's CSRF token; `check_csrf` compares it in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

from rehost.db import schema
from rehost.db.store import Store

COOKIE = "rehost_console"
PRE_COOKIE = "rehost_console_pre"  # guards the sign-in form itself against login CSRF
SESSION_TTL = 12 * 3600.0


def load_or_create_key(data_dir: Path) -> bytes:
    """The console's HMAC key, created once per data directory with mode 0600."""
    path = data_dir / "console.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()  # another process created it first
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    return path.read_bytes()


@dataclass
class Session:
    """One signed-in browser: who it is and its CSRF token (never the secret key)."""

    session_id: str
    access_key_id: str
    user_name: str
    csrf: str
    expires: float
    # (kind, message, optional (link text, href)) shown once on the next page
    flashes: list[tuple[str, str, tuple[str, str] | None]] = field(default_factory=list)


Flash = tuple[str, str, tuple[str, str] | None]


def _row_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _flashes(raw: Any) -> list[Flash]:
    return [(str(k), str(m), (str(link[0]), str(link[1])) if link else None) for k, m, link in raw or []]


class SessionStore:
    """The server-side session table (in the database) and the cookie signing."""

    def __init__(self, key: bytes, store: Store) -> None:
        self._key = key
        self.store = store

    def _mac(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()

    def sign(self, value: str) -> str:
        return f"{value}.{self._mac(value)}"

    def unsign(self, signed: str | None) -> str | None:
        """The value of a signed string, or None if it is missing or its MAC does not match."""
        if not signed or "." not in signed:
            return None
        value, mac = signed.rsplit(".", 1)
        return value if hmac.compare_digest(mac, self._mac(value)) else None

    def create(self, access_key_id: str, user_name: str) -> tuple[Session, str]:
        """A new session and the cookie value naming it."""
        sid = secrets.token_urlsafe(32)
        session = Session(sid, access_key_id, user_name, secrets.token_urlsafe(32), time.time() + SESSION_TTL)
        t = schema.console_sessions
        with self.store.transaction() as conn:
            conn.execute(delete(t).where(t.c.expires < time.time()))
            conn.execute(t.insert().values(id=_row_id(sid), access_key_id=access_key_id, user_name=user_name,
                                           csrf=session.csrf, expires=session.expires, flashes=[]))
        return session, self.sign(sid)

    def get(self, cookie: str | None) -> Session | None:
        sid = self.unsign(cookie)
        if sid is None:
            return None
        t = schema.console_sessions
        with self.store.read() as conn:
            row = conn.execute(select(t).where(t.c.id == _row_id(sid))).first()
        if row is None:
            return None
        if row.expires < time.time():
            with self.store.transaction() as conn:
                conn.execute(delete(t).where(t.c.id == row.id))
            return None
        return Session(sid, row.access_key_id, row.user_name, row.csrf, row.expires, _flashes(row.flashes))

    def drop(self, session: Session) -> None:
        t = schema.console_sessions
        with self.store.transaction() as conn:
            conn.execute(delete(t).where(t.c.id == _row_id(session.session_id)))

    def add_flash(self, session: Session, flash: Flash) -> None:
        """Queue a message for the session's next page (whichever process serves it)."""
        self._update_flashes(session, lambda queued: [*queued, flash])

    def take_flashes(self, session: Session) -> list[Flash]:
        """The session's queued messages, now shown: the queue is emptied."""
        taken: list[Flash] = []

        def take(queued: list[Flash]) -> list[Flash]:
            taken.extend(queued)
            return []

        self._update_flashes(session, take)
        return taken

    def _update_flashes(self, session: Session, change: Any) -> None:
        t = schema.console_sessions
        with self.store.transaction() as conn:
            stmt = select(t.c.flashes).where(t.c.id == _row_id(session.session_id))
            if not self.store.is_sqlite:
                stmt = stmt.with_for_update()
            raw = conn.execute(stmt).scalar()
            if raw is None:
                return  # signed out meanwhile
            new = change(_flashes(raw))
            conn.execute(update(t).where(t.c.id == _row_id(session.session_id))
                         .values(flashes=[[k, m, list(link) if link else None] for k, m, link in new]))
        session.flashes = new

    def pre_token(self, pre_cookie: str | None) -> str:
        """The sign-in form's CSRF token for a browser's pre-session cookie value."""
        return self._mac("pre:" + (pre_cookie or ""))


def check_csrf(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected, given or "")
