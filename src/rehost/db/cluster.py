"""Several `rehost server` processes on one database: which of them are alive, which one runs the monitor.

What a caller may rely on:
- SQLite serves one process. `Cluster` takes an exclusive ``flock`` on ``<data-dir>/server.lock`` for the
  process's life, so a second `rehost server` on that data directory stops at start-up with one line
  (`Conflict`, exit code 4). The kernel drops the lock when the process dies, however it dies. Every
  record of another process is then one of a process that has ended.
- On PostgreSQL each process registers a row in ``control_plane_processes`` and holds, on a database
  connection of its own, a session advisory lock keyed by its number. The database releases it the moment
  the process's session ends (an exit, kill -9, a lost host: its connection closes), so `is_alive` asks the
  lock and never a clock: no lease to wait out, no clock skew between hosts.
- `lead()` elects the process that runs the periodic work (the monitor: stalled agents, snapshots,
  pruning, garbage collection): ``pg_try_advisory_lock`` on that same connection, held until the process
  dies; every process tries again at each of its monitor passes, so the work moves within one pass.
- A heartbeat thread records ``heartbeat_at`` (for operators), checks the dedicated connection and, on the
  leader, forgets the rows of processes that died. If the connection was lost (a database restart), its
  locks went with it: the process reconnects, takes its own lock again and leads only once re-elected. Jobs
  taken over meanwhile by another process are noticed by the job runner (``jobs.owner`` changed).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
from pathlib import Path

from sqlalchemy import Connection, delete, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from rehost import ids
from rehost.db import schema
from rehost.db.store import LOCK_CLASS, Store
from rehost.errors import Conflict, StorageError

log = logging.getLogger("rehost.cluster")

LEADER_LOCK = (LOCK_CLASS, 0)  # held by the process that runs the monitor
PROCESS_LOCK_CLASS = LOCK_CLASS + 1  # (this class, process number): held by that process while it lives
_TRY = text("SELECT pg_try_advisory_lock(:c, :o)")
_UNLOCK = text("SELECT pg_advisory_unlock(:c, :o)")


def _exclusive(path: Path) -> int:
    """An open descriptor of ``path`` holding its exclusive flock, or Conflict naming the holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise Conflict(f"another rehost server{who} is already running on {path.parent}: SQLite serves one "
                       f"process; use --database-url with PostgreSQL to run several") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


class Cluster:
    """This process's membership of the control plane."""

    def __init__(self, store: Store, data_dir: Path, *, heartbeat_interval: float = 5.0) -> None:
        self.store = store
        self.sole = store.is_sqlite
        self._lock = threading.Lock()  # guards the dedicated connection
        self._conn: Connection | None = None
        self._leading = False
        self._flock = _exclusive(data_dir / "server.lock") if self.sole else None
        with store.transaction() as conn:
            self.number = store.next_seq(conn, "control_plane_process")
        self.id = f"{socket.gethostname()[:40]}:{os.getpid()}:{self.number}"
        self._backend_pid: int | None = None
        if not self.sole:
            self._connect()
        self._register()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_interval,), name="heartbeat", daemon=True)
        self._thread.start()

    # -- membership -------------------------------------------------------------------------------------

    def _connect(self) -> None:
        """Open the dedicated connection and take this process's own lock on it."""
        conn = self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            if not conn.execute(_TRY, {"c": PROCESS_LOCK_CLASS, "o": self.number}).scalar_one():
                raise StorageError(f"the lock of control-plane process {self.number} is held by another session")
            self._backend_pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _register(self) -> None:
        t = schema.control_plane_processes
        now = ids.utcnow()
        with self.store.transaction() as conn:
            if self.sole:  # this process holds the data directory's lock: every other row is of an ended one
                conn.execute(delete(t))
            else:
                conn.execute(delete(t).where(t.c.id == self.id))
            conn.execute(t.insert().values(id=self.id, number=self.number, host=socket.gethostname()[:255],
                                           pid=os.getpid(), backend_pid=self._backend_pid, started_at=now,
                                           heartbeat_at=now))

    def is_alive(self, process_id: str | None) -> bool:
        """Whether the process ``process_id`` (a job's owner) still runs; None (no owner) is not alive.
        When the database cannot tell (an error), the answer is yes: a job is never taken over on a doubt."""
        if process_id == self.id:
            return True
        if process_id is None or self.sole:
            return False
        t = schema.control_plane_processes
        try:
            with self.store.read() as conn:
                number = conn.execute(select(t.c.number).where(t.c.id == process_id)).scalar()
        except SQLAlchemyError:
            return True
        if number is None:
            return False  # it ended cleanly (its row went with it) or was forgotten after it died
        with self._lock:
            if self._conn is None:
                return True
            try:
                if self._conn.execute(_TRY, {"c": PROCESS_LOCK_CLASS, "o": int(number)}).scalar_one():
                    self._conn.execute(_UNLOCK, {"c": PROCESS_LOCK_CLASS, "o": int(number)})
                    return False
                return True
            except SQLAlchemyError:
                return True

    def lead(self) -> bool:
        """Whether this process runs the periodic work now (trying to become the one that does)."""
        if self.sole:
            return True
        with self._lock:
            if self._conn is None:
                return False
            was = self._leading
            try:
                if self._leading:
                    self._conn.execute(text("SELECT 1"))  # still connected, so still holding it
                else:
                    self._leading = bool(self._conn.execute(_TRY, {"c": LEADER_LOCK[0], "o": LEADER_LOCK[1]}).scalar_one())
            except SQLAlchemyError as exc:
                log.warning("lost the database connection holding this process's locks: %s", exc)
                self._leading = False
        if self._leading and not was:
            log.info("this process (%s) now runs the monitor", self.id)
        return self._leading

    # -- upkeep -----------------------------------------------------------------------------------------

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._check_connection()
                with self.store.transaction() as conn:
                    t = schema.control_plane_processes
                    found = conn.execute(update(t).where(t.c.id == self.id).values(heartbeat_at=ids.utcnow())).rowcount
                if not found:
                    self._register()
                if self._leading:
                    self._forget_dead()
            except (SQLAlchemyError, StorageError) as exc:
                log.warning("control-plane heartbeat failed: %s", exc)

    def _check_connection(self) -> None:
        if self.sole:
            return
        with self._lock:
            try:
                if self._conn is not None:
                    self._conn.execute(text("SELECT 1"))
                    return
            except SQLAlchemyError:
                log.warning("the database connection holding this process's locks was lost; reconnecting")
                self._leading = False
                try:
                    self._conn.close()  # type: ignore[union-attr]
                except SQLAlchemyError:
                    pass
                self._conn = None
            self._connect()
        self._register()

    def _forget_dead(self) -> None:
        t = schema.control_plane_processes
        with self.store.read() as conn:
            others = [r[0] for r in conn.execute(select(t.c.id).where(t.c.id != self.id))]
        dead = [pid for pid in others if not self.is_alive(pid)]
        if dead:
            with self.store.transaction() as conn:
                conn.execute(delete(t).where(t.c.id.in_(dead)))
            log.info("control-plane processes that ended: %s", ", ".join(dead))

    def close(self) -> None:
        """Leave the control plane: others take over this process's unfinished jobs at once."""
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            with self.store.transaction() as conn:
                t = schema.control_plane_processes
                conn.execute(delete(t).where(t.c.id == self.id))
        except (SQLAlchemyError, StorageError) as exc:
            log.warning("could not remove this process's record: %s", exc)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._leading = False
        if self._flock is not None:
            os.close(self._flock)
            self._flock = None
