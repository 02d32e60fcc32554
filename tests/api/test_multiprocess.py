"""Several `rehost server` processes on one PostgreSQL database behave as one control plane: a job is run by
exactly one of them, a job whose process was killed is taken over and failed as a restart fails it, the
monitor runs on one elected process and moves when that one dies. On SQLite, a second process on the same
data directory is refused with one line."""

from __future__ import annotations

import secrets
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import REHOST, RunningServer, free_port

from .conftest import Api, PostgresCluster
from .waiting import log_events, wait_job

LEADER_LOCK_CLASS = 0x7265686F  # rehost.db.store.LOCK_CLASS; object 0 is the monitor's election


class Group:
    """`rehost server` processes sharing one data directory and one PostgreSQL database."""

    def __init__(self, base: Path, url: str, *extra: str) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="group-", dir=base)) / "data"
        self.url = url
        self.extra = extra
        self.servers: list[RunningServer] = []

    def add(self) -> RunningServer:
        server = RunningServer(self.data_dir, free_port(), extra_args=("--database-url", self.url, *self.extra),
                               env={"REHOST_DATABASE_URL": self.url})
        self.servers.append(server)
        return server.start()

    def api(self, server: RunningServer, key: tuple[str, str], *, initialize: bool = False) -> Api:
        from .agentapi import AgentClient

        mgn = server.client(key)
        if initialize:
            mgn.initialize_service()
        return Api(server, key, mgn, AgentClient(server.endpoint, *key, region=server.region, data_dir=self.data_dir))

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            return list(conn.execute(sql, params).fetchall())  # type: ignore[arg-type]

    def by_pid(self, process_id: str) -> RunningServer:
        """The server whose process is ``process_id`` (``host:pid:number``, a job's owner)."""
        pid = int(process_id.split(":")[-2])
        return next(s for s in self.servers if s.proc is not None and s.proc.pid == pid)

    def leaders(self) -> list[str]:
        """The processes holding the monitor's advisory lock, as PostgreSQL's lock table shows it."""
        rows = self.query(
            "SELECT p.id FROM pg_locks l JOIN control_plane_processes p ON p.backend_pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = 0", LEADER_LOCK_CLASS)
        return [r[0] for r in rows]

    def stop_all(self) -> None:
        for server in self.servers:
            try:
                server.stop()
            except Exception:
                if server.proc is not None:
                    server.proc.kill()


@pytest.fixture
def group(postgres_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Group]]:
    made: list[Group] = []

    def make(*extra: str) -> Group:
        g = Group(tmp_path_factory.mktemp("multi"), postgres_cluster.new_database(), *extra)
        made.append(g)
        return g

    yield make
    for g in made:
        g.stop_all()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def _statuses(api: Api, job_ids: list[str]) -> dict[str, str]:
    return {j["jobID"]: j["status"] for j in api.mgn.describe_jobs(filters={"jobIDs": job_ids})["items"]}


@pytest.mark.postgres
def test_a_batch_of_jobs_runs_exactly_once_on_three_processes(group: Callable[..., Group]) -> None:
    g = group()
    a, b, c = g.add(), g.add(), g.add()
    key = a.access_key()
    apis = [g.api(a, key, initialize=True), g.api(b, key), g.api(c, key)]
    sids = [apis[i % 3].ready_server() for i in range(12)]
    # Every job is created through process A (or B for a few): A runs four at a time (its workers), so
    # the others can only start if B and C claim them from the database.
    jobs = [apis[0 if i % 4 else 1].mgn.start_test(sourceServerIDs=[sid])["job"]["jobID"] for i, sid in enumerate(sids)]
    # Each job waits for its agent's snapshot, which nobody answers yet: all twelve STARTED means three
    # processes of four workers each hold them.
    wait_for(lambda: set(_statuses(apis[2], jobs).values()) == {"STARTED"}, "all twelve jobs STARTED")
    owners = dict(g.query("SELECT id, owner FROM jobs WHERE id = ANY(%s)", jobs))
    assert sorted(Counter(owners.values()).values()) == [4, 4, 4]
    assert {g.by_pid(o).port for o in owners.values()} == {a.port, b.port, c.port}

    for i, (sid, job_id) in enumerate(zip(sids, jobs, strict=True)):
        job = apis[(i + 1) % 3].finish_job(sid, job_id)  # the agent answers whichever process it reaches
        assert job["participatingServers"][0]["launchStatus"] == "FAILED"  # the test disk does not convert
    for job_id in jobs:
        events = [e["event"] for e in log_events(apis[0].mgn, job_id)]
        assert events.count("JOB_START") == 1 and events.count("SNAPSHOT_START") == 1, events
        assert events[-1] == "JOB_END" and events.count("JOB_END") == 1, events
    # one snapshot request per server: no job ran twice
    requests = g.query("SELECT source_server_id, count(*) FROM agent_commands WHERE type = 'SYNC_SNAPSHOT' "
                       "GROUP BY source_server_id")
    assert dict(requests) == dict.fromkeys(sids, 1)
    assert g.query("SELECT count(*) FROM jobs WHERE status <> 'COMPLETED'") == [(0,)]


@pytest.mark.postgres
def test_a_job_whose_process_is_killed_is_taken_over(group: Callable[..., Group]) -> None:
    g = group()
    a, b = g.add(), g.add()
    key = a.access_key()
    api_a, api_b = g.api(a, key, initialize=True), g.api(b, key)
    sid = api_a.ready_server()
    job_id = api_b.mgn.start_test(sourceServerIDs=[sid])["job"]["jobID"]
    owner = wait_for(lambda: (g.query("SELECT owner FROM jobs WHERE id = %s AND status = 'STARTED'", job_id)
                              or [(None,)])[0][0], "the job STARTED")
    running = g.by_pid(owner)
    survivor, api = (b, api_b) if running is a else (a, api_a)
    wait_for(lambda: g.query("SELECT id FROM agent_commands WHERE source_server_id = %s AND type = 'SYNC_SNAPSHOT'",
                             sid), "the job asking the agent for a snapshot")

    running.stop(kill=True)  # kill -9: the job is left STARTED, waiting for a snapshot

    job = wait_job(api.mgn, job_id, timeout=60)
    assert job["participatingServers"][0]["launchStatus"] == "FAILED"
    events = log_events(api.mgn, job_id)
    assert events[-1]["event"] == "JOB_CANCEL" and "restart" in events[-1]["eventData"]["rawError"]
    assert [e["event"] for e in events].count("JOB_START") == 1
    (new_owner,) = g.query("SELECT owner FROM jobs WHERE id = %s", job_id)[0]
    assert new_owner != owner and g.by_pid(new_owner) is survivor
    # its snapshot request is withdrawn, so the agent does not act on it for nobody
    assert g.query("SELECT status FROM agent_commands WHERE source_server_id = %s AND type = 'SYNC_SNAPSHOT'",
                   sid) == [("FAILED",)]
    # the survivor goes on: a new test of the same server runs to its end
    again = api.run_launch("start_test", sid)
    assert log_events(api.mgn, again["jobID"])[-1]["event"] == "JOB_END"


@pytest.mark.postgres
def test_the_monitor_runs_on_one_process_and_moves_when_it_dies(group: Callable[..., Group]) -> None:
    g = group("--monitor-interval", "0.3", "--agent-silence-seconds", "2")
    servers = [g.add(), g.add(), g.add()]
    key = servers[0].access_key()
    apis = [g.api(s, key, initialize=(i == 0)) for i, s in enumerate(servers)]
    (leader,) = wait_for(g.leaders, "a process elected to run the monitor", timeout=30)
    old = g.by_pid(leader)

    old.stop(kill=True)

    (new_leader,) = wait_for(g.leaders, "the monitor moved to a living process", timeout=30)
    assert new_leader != leader and g.by_pid(new_leader).proc is not None
    survivor = next(api for api in apis if api.server.proc is not None)
    # the periodic work goes on: an agent that goes silent is flagged STALLED (AGENT_NOT_SEEN)
    sid = survivor.ready_server()

    def stalled() -> bool:
        doc = survivor.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]
        info = doc["dataReplicationInfo"]
        return bool(info["dataReplicationState"] == "STALLED" and info["dataReplicationError"]["error"] == "AGENT_NOT_SEEN")

    wait_for(stalled, "the silent agent STALLED by the new monitor", timeout=60)
    assert len(g.leaders()) == 1  # still exactly one
    # the dead process's record is forgotten; the living ones are listed
    live = {r[0] for r in g.query("SELECT id FROM control_plane_processes")}
    wait_for(lambda: leader not in {r[0] for r in g.query("SELECT id FROM control_plane_processes")},
             "the dead process forgotten")
    assert new_leader in live


def test_a_second_server_on_a_sqlite_data_directory_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = RunningServer(data, free_port()).start()
    try:
        second = subprocess.run([*REHOST, "server", "--data-dir", str(data), "--port", str(free_port())],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 4, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "another rehost server" in lines[0] and f"pid {first.proc.pid}" in lines[0], lines  # type: ignore[union-attr]
        assert "PostgreSQL" in lines[0]
        # the first one is untouched, and once it is gone (however it ends) the directory is free again
        mgn = first.client()
        mgn.initialize_service()
        assert mgn.describe_source_servers(filters={})["items"] == []
        first.stop(kill=True)
        first.start()
        assert first.client().describe_source_servers(filters={})["items"] == []
    finally:
        first.stop()


@pytest.mark.postgres
def test_sequences_are_strictly_increasing_under_concurrent_writers(postgres_cluster: PostgresCluster) -> None:
    """Two stores (two engines, as two processes have) drawing numbers from many threads at once."""
    import threading

    from rehost.db.store import Store

    url = postgres_cluster.new_database()
    stores = [Store(url), Store(url)]
    drawn: list[list[int]] = [[] for _ in range(8)]

    def draw(i: int) -> None:
        store = stores[i % 2]
        for _ in range(40):
            with store.transaction() as conn:
                drawn[i].append(store.next_seq(conn, "job"))

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [n for numbers in drawn for n in numbers]
    assert sorted(every) == list(range(1, 321))
    assert all(numbers == sorted(numbers) for numbers in drawn)
    for store in stores:
        store.close()


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    """A database of schema 1 (counters in ``meta``, no job owner) opens, keeps its counters, and claims."""
    import sqlite3

    from rehost import ids
    from rehost.db import repo
    from rehost.db.store import Store

    path = tmp_path / "old.db"
    Store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as db:  # make it what rehost 1 left
        db.execute("ALTER TABLE jobs DROP COLUMN owner")
        db.execute("DELETE FROM sequences")
        db.execute("INSERT INTO meta (key, value) VALUES ('seq:job', '41')")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    store = Store(f"sqlite:///{path}")
    try:
        assert store.get_meta("schema_version") == "2" and store.get_meta("seq:job") is None
        with store.transaction() as conn:
            assert store.next_seq(conn, "job") == 42
            assert store.next_seq(conn, "never-used-" + secrets.token_hex(2)) == 1
            repo.insert_job(conn, {"jobID": "mgnjob-1", "status": "PENDING"}, 42, ids.utcnow())
            assert repo.claim_job(conn, "mgnjob-1", "me") is not None
            assert repo.claim_job(conn, "mgnjob-1", "other") is None
            assert repo.job_owner(conn, "mgnjob-1") == "me"
    finally:
        store.close()


@pytest.mark.postgres
def test_console_sessions_work_on_every_process_and_survive_a_restart(group: Callable[..., Group]) -> None:
    from console.httpclient import ConsoleClient

    g = group()
    a, b = g.add(), g.add()
    key = a.access_key()
    g.api(a, key, initialize=True)
    on_a = ConsoleClient(a.endpoint)
    assert on_a.sign_in(*key).status == 303
    on_b = ConsoleClient(b.endpoint, jar=on_a.jar)  # the same browser, sent to the other process
    assert on_b.get("/console/jobs").status == 200
    # a message queued by one process is shown once by the other
    resp = on_a.post("/console/applications/create", {"csrf": on_b.csrf(), "name": "payroll"})
    assert resp.status == 303
    page = on_b.get(resp.headers["location"].removeprefix(b.endpoint))
    assert page.status == 200 and "Application payroll created." in page.body
    assert "created." not in on_b.get("/console/applications").body
    # a restart of both signs nobody out
    a.stop(kill=True)
    b.restart()
    a.start()
    assert on_a.get("/console/jobs").status == 200 and on_b.get("/console/jobs").status == 200
    # signing out on one process ends the session on every one
    assert on_b.post("/console/signout", {"csrf": on_b.csrf()}).status == 303
    signed_out = on_a.get("/console/jobs")
    assert signed_out.status == 303 and "/signin" in signed_out.headers["location"]
