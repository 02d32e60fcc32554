"""Console sessions: a signed cookie naming a server-side session, and CSRF tokens.

What a caller may rely on:
- The cookie carries only a random session ID and its HMAC (key: ``<data-dir>/console.key``, 32 random
  bytes created 0600). The access key's secret is checked once at sign-in and never stored in the session,
  the cookie or any page; each request re-reads the key from the IAM store, so a deleted or deactivated
  key ends its sessions at once.
- Sessions live in this process (a restart signs everyone out) and expire after `SESSION_TTL`.
- Every form carries the session's CSRF token; `check_csrf` compares it in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

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


class SessionStore:
    """The server-side session table and the cookie signing."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

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
        with self._lock:
            now = time.time()
            for stale in [k for k, s in self._sessions.items() if s.expires < now]:
                del self._sessions[stale]
            self._sessions[sid] = session
        return session, self.sign(sid)

    def get(self, cookie: str | None) -> Session | None:
        sid = self.unsign(cookie)
        if sid is None:
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is None or session.expires < time.time():
                self._sessions.pop(sid, None)
                return None
            return session

    def drop(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.session_id, None)

    def pre_token(self, pre_cookie: str | None) -> str:
        """The sign-in form's CSRF token for a browser's pre-session cookie value."""
        return self._mac("pre:" + (pre_cookie or ""))


def check_csrf(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected, given or "")
