"""The control-plane store: one SQLAlchemy engine over SQLite (default) or PostgreSQL.

Contract:
- ``Store.transaction()`` yields a connection inside one transaction; it commits on normal exit and rolls
  back on an exception. Writes are serialised inside this process, so SQLite never answers "database is
  locked" to our own threads; between processes (PostgreSQL only: SQLite serves one `rehost server`, see
  ``rehost.db.cluster``) the database's row locks and conditional updates decide.
- The schema is created on first open and its version recorded in ``meta``; an older one is migrated
  (``schema.migrate``, under an advisory lock on PostgreSQL so that processes starting together do it
  once); opening a database written by a newer schema raises StorageError instead of corrupting it.
- ``next_seq(conn, name)`` gives a strictly increasing counter per name, used to order records stably:
  one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` on the ``sequences`` row, so on PostgreSQL the
  row stays locked until the caller's transaction ends and numbers follow commit order across processes
  (a page boundary never skips a row committed later with a smaller number).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from rehost.db import schema
from rehost.errors import StorageError
from rehost.fsutil import private_file

# PostgreSQL advisory lock keys (two int4: a class of rehost's own, then an object): the schema's creation
# and migration; rehost.db.cluster uses the same class for the monitor's election and its processes.
LOCK_CLASS = 0x7265686F  # "reho"
SCHEMA_LOCK = (LOCK_CLASS, 1)


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
            with self._schema_lock():
                schema.metadata.create_all(self.engine)
                with self.transaction() as conn:
                    row = conn.execute(select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")).first()
                    if row is None:
                        conn.execute(schema.meta.insert().values(key="schema_version", value=str(schema.SCHEMA_VERSION)))
                    elif int(row[0]) > schema.SCHEMA_VERSION:
                        raise StorageError(
                            f"the database has schema version {row[0]}, newer than this rehost ({schema.SCHEMA_VERSION})"
                        )
                    elif int(row[0]) < schema.SCHEMA_VERSION:
                        schema.migrate(conn, int(row[0]))
                        self.set_meta(conn, "schema_version", str(schema.SCHEMA_VERSION))
        except OperationalError as exc:
            raise StorageError(f"cannot open database {self.redacted_url}: {exc.orig}") from exc

    @contextmanager
    def _schema_lock(self) -> Iterator[None]:
        """On PostgreSQL, one process at a time creates or migrates the schema (processes starting together
        would otherwise race on CREATE TABLE and ALTER TABLE)."""
        if self.is_sqlite:
            yield
            return
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:c, :o)"), {"c": SCHEMA_LOCK[0], "o": SCHEMA_LOCK[1]})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:c, :o)"), {"c": SCHEMA_LOCK[0], "o": SCHEMA_LOCK[1]})
                conn.commit()

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
        t = schema.sequences
        insert = (sqlite.insert if self.is_sqlite else postgresql.insert)(t).values(name=name, value=1)
        stmt = insert.on_conflict_do_update(index_elements=[t.c.name], set_={"value": t.c.value + 1}).returning(t.c.value)
        return int(conn.execute(stmt).scalar_one())

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
