"""Fixtures of the API suite: real `rehost server` processes on loopback, on SQLite and on PostgreSQL.

Every module runs once per backend (``backend`` is parametrised "sqlite" / "postgres"). PostgreSQL is the
cluster named by ``REHOST_TEST_DATABASE_URL`` (``make test`` starts one), or else a throwaway cluster this
suite starts itself with ``scripts/pg-test-cluster.sh``; only when neither works are the PostgreSQL runs
skipped, with the reason. Each server gets a fresh data directory and, on PostgreSQL, a fresh database.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from helpers import RunningServer, free_port

from .agentapi import AgentClient

# Read at import: the root conftest scrubs REHOST_* from the environment of every test.
PG_URL_FROM_ENV = os.environ.get("REHOST_TEST_DATABASE_URL")
TEST_AGENT_SNAPSHOT_FAILURE = "test agent: this source has no disks to snapshot"
PG_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pg-test-cluster.sh"


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class PostgresCluster:
    """Creates and drops one database per server on an admin URL."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(_psycopg_url(self.admin_url), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def new_database(self) -> str:
        name = "rehost_test_" + secrets.token_hex(6)
        self._admin(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return _with_database(self.admin_url, name)

    def drop_all(self) -> None:
        for name in self.created:
            try:
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception:  # a database left behind in a throwaway cluster is harmless
                pass
        self.created.clear()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The PostgreSQL to test on: REHOST_TEST_DATABASE_URL, else a throwaway cluster, else skip."""
    if PG_URL_FROM_ENV:
        cluster = PostgresCluster(PG_URL_FROM_ENV)
        try:
            cluster._admin("SELECT 1")
        except Exception as exc:
            pytest.skip(f"REHOST_TEST_DATABASE_URL is set but PostgreSQL does not answer: {exc}")
        yield cluster
        cluster.drop_all()
        return
    # Directly under /tmp: the cluster runs as user postgres, who cannot enter pytest's 0700 tmp dirs.
    workdir = Path(tempfile.mkdtemp(prefix="rehost-pg-", dir="/tmp"))
    proc = subprocess.run([str(PG_SCRIPT), "start", str(workdir)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.skip(f"no REHOST_TEST_DATABASE_URL and a throwaway PostgreSQL cluster did not start: "
                    f"{proc.stderr.strip()[-500:]}")
    cluster = PostgresCluster(proc.stdout.strip().splitlines()[-1])
    try:
        yield cluster
    finally:
        cluster.drop_all()
        subprocess.run([str(PG_SCRIPT), "stop", str(workdir)], capture_output=True, timeout=120)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class ServerFactory:
    """Starts `rehost server` processes on the module's backend and stops them all at the end."""

    backend: str
    base: Path
    cluster: PostgresCluster | None
    servers: list[RunningServer] = field(default_factory=list)

    def new(self, *extra_args: str) -> RunningServer:
        data_dir = Path(tempfile.mkdtemp(prefix="srv-", dir=self.base)) / "data"
        env: dict[str, str] = {}
        args = list(extra_args)
        if self.cluster is not None:
            url = self.cluster.new_database()
            env["REHOST_DATABASE_URL"] = url  # the `rehost iam` CLI reads the same database
            args += ["--database-url", url]
        server = RunningServer(data_dir, free_port(), extra_args=tuple(args), env=env)
        self.servers.append(server)
        return server.start()

    def stop_all(self) -> None:
        for server in self.servers:
            try:
                server.stop()
            except Exception:
                if server.proc is not None:
                    server.proc.kill()


@pytest.fixture(scope="module")
def servers(backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    cluster = request.getfixturevalue("postgres_cluster") if backend == "postgres" else None
    factory = ServerFactory(backend, tmp_path_factory.mktemp(f"api-{backend}"), cluster)
    try:
        yield factory
    finally:
        factory.stop_all()


@dataclass
class Api:
    """One running, initialised server with the admin's boto3 client and an agent client."""

    server: RunningServer
    key: tuple[str, str]
    mgn: Any
    agent: AgentClient

    def ready_server(self, **register: Any) -> str:
        """A new source server whose initial sync is complete: READY_FOR_TEST."""
        sid = str(self.agent.register(**register)["sourceServerID"])
        self.agent.report_synced(sid)
        return sid

    def _answer_snapshots(self, sid: str) -> int:
        commands = self.agent.call("GetAgentCommandForMgn", {"sourceServerID": sid})["commands"]
        snaps = [c for c in commands if c["type"] in ("SNAPSHOT", "SYNC_SNAPSHOT")]
        if snaps:
            self.agent.call("UpdateAgentReplicationInfoForMgn", {
                "sourceServerID": sid, "initialSyncComplete": True,
                "commandResults": [{"commandID": c["commandID"], "status": "FAILED",
                                    "message": TEST_AGENT_SNAPSHOT_FAILURE} for c in snaps]})
        return len(snaps)

    def fail_snapshots(self, sid: str, timeout: float = 60.0) -> int:
        """Play the agent of `sid`: answer a launch job's snapshot request(s) with FAILED.

        A launch job asks the agent for a snapshot (a SYNC_SNAPSHOT command) and waits for its answer; this
        test agent has no disks, so it reports the failure and the job ends with the reason in its log.
        Returns how many snapshot commands were answered (at least one, else AssertionError).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answered = self._answer_snapshots(sid)
            if answered:
                return answered
            time.sleep(0.05)
        raise AssertionError(f"no snapshot command for {sid} within {timeout} s")

    def finish_job(self, sid: str, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Answer `sid`'s snapshot requests with FAILED until job `job_id` completes; return the job.

        Keeps answering because a request left over from an earlier, interrupted job may be answered first.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._answer_snapshots(sid)
            job = self.mgn.describe_jobs(filters={"jobIDs": [job_id]})["items"][0]
            if job["status"] == "COMPLETED":
                return dict(job)
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not complete within {timeout} s")

    def run_launch(self, operation: str, sid: str, **kwargs: Any) -> dict[str, Any]:
        """StartTest / StartCutover one server, let its job fail at the snapshot, return the finished job."""
        job = getattr(self.mgn, operation)(sourceServerIDs=[sid], **kwargs)["job"]
        return self.finish_job(sid, job["jobID"])

    def state(self, sid: str) -> str:
        items = self.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"]
        return str(items[0]["lifeCycle"]["state"])


def make_api(server: RunningServer, *, initialize: bool = True) -> Api:
    key = server.access_key()
    mgn = server.client(key)
    if initialize:
        mgn.initialize_service()
    return Api(server, key, mgn, AgentClient(server.endpoint, *key, region=server.region, data_dir=server.data_dir))


@pytest.fixture(scope="module")
def api(servers: ServerFactory) -> Api:
    """A server shared by a module's tests (each test makes its own source servers)."""
    return make_api(servers.new())
