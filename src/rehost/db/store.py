"""The control-plane store: one SQLAlchemy engine over SQLite (default) or PostgreSQL.

Contract:
- ``Store.transaction()`` yields a connection inside one transaction; it commits on normal exit and rolls
  back on an exception. Writes are serialised inside this process (the control plane is one process), so
  SQLite never answers "database is locked" to our own threads.
- The schema is created on first open and its version recorded in ``meta``; opening a database written
  by a newer schema raises StorageError instead of corrupting it.
- ``next_seq(conn, name)`` gives a strictly increasing counter per name, used to order records stably.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from rehost.db import schema
from rehost.errors import StorageError
from rehost.fsutil import private_file


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _private_sqlite_file(url: str) -> None:
    """Create a SQLite database file 0600 before SQLite does, so it and its -wal and -shm files (which
    SQLite creates with the database file's mode) are the owner's alone, whatever the umask."""
    path = url.split("///", 1)[1].split("?", 1)[0] if "///" in url else ""
    if path and path != ":memory:":
        try:
            private_file(Path(path))
        except OSError as exc:
            raise StorageError(f"cannot create database file {path}: {exc.strerror}") from exc


class Store:
    """The database of one rehost control plane."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            _private_sqlite_file(url)
        else:
            kwargs["pool_pre_ping"] = True
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            elif url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url[len("postgres://") :]
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StorageError(f"cannot use database {self.redacted_url}: {exc}") from exc
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._write_lock = threading.RLock()
        self._init_schema()

    @property
    def redacted_url(self) -> str:
        if "@" in self.url:
            scheme, rest = self.url.split("://", 1)
            return f"{scheme}://***@{rest.split('@', 1)[1]}"
        return self.url

    def _init_schema(self) -> None:
        try:
            schema.metadata.create_all(self.engine)
            with self.transaction() as conn:
                row = conn.execute(select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")).first()
                if row is None:
                    conn.execute(schema.meta.insert().values(key="schema_version", value=str(schema.SCHEMA_VERSION)))
                elif int(row[0]) > schema.SCHEMA_VERSION:
                    raise StorageError(
                        f"the database has schema version {row[0]}, newer than this rehost ({schema.SCHEMA_VERSION})"
                    )
        except OperationalError as exc:
            raise StorageError(f"cannot open database {self.redacted_url}: {exc.orig}") from exc

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self._write_lock:
            try:
                with self.engine.begin() as conn:
                    yield conn
            except OperationalError as exc:
                raise StorageError(f"database error: {exc.orig}") from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads only: no write lock, so readers never wait for writers on WAL."""
        with self.engine.connect() as conn:
            yield conn

    def next_seq(self, conn: Connection, name: str) -> int:
        key = f"seq:{name}"
        row = conn.execute(select(schema.meta.c.value).where(schema.meta.c.key == key)).first()
        if row is None:
            conn.execute(schema.meta.insert().values(key=key, value="1"))
            return 1
        value = int(row[0]) + 1
        conn.execute(update(schema.meta).where(schema.meta.c.key == key).values(value=str(value)))
        return value

    def get_meta(self, key: str) -> str | None:
        with self.read() as conn:
            row = conn.execute(select(schema.meta.c.value).where(schema.meta.c.key == key)).first()
            return None if row is None else str(row[0])

    def set_meta(self, conn: Connection, key: str, value: str) -> None:
        if conn.execute(select(schema.meta.c.key).where(schema.meta.c.key == key)).first():
            conn.execute(update(schema.meta).where(schema.meta.c.key == key).values(value=value))
        else:
            conn.execute(schema.meta.insert().values(key=key, value=value))

    def close(self) -> None:
        self.engine.dispose()
