"""The control plane keeps agent metrics and logs for a bounded window and forgets deleted servers.

A real `rehost server` with small limits (``REHOST_AGENT_METRICS_MAX_ROWS`` 5, ``REHOST_AGENT_LOGS_MAX_LINES``
10) and a 0.5 s monitor, so its pruning pass runs every 6 s; the test plays the agents over the agent API and
reads the server's database directly to see what is kept.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.agentapi import AgentClient
from helpers import RunningServer
from rehost.controlplane import LOG_FILE_LIMIT

from .conftest import served

ENV = {"REHOST_AGENT_METRICS_MAX_ROWS": "5", "REHOST_AGENT_LOGS_MAX_LINES": "10"}


@pytest.fixture
def env() -> Iterator[tuple[RunningServer, Any, AgentClient]]:
    with served("--monitor-interval", "0.5", env=ENV) as parts:
        yield parts


def rows(server: RunningServer, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{server.data_dir / 'rehost.db'}?mode=ro", uri=True) as db:
        return db.execute(sql, args).fetchall()


def count(server: RunningServer, table: str, sid: str) -> int:
    return int(rows(server, f"SELECT count(*) FROM {table} WHERE source_server_id = ?", sid)[0][0])


def docs_of(server: RunningServer, sid: str) -> list[tuple[str, str]]:
    """The EC2 documents that name ``sid`` (its launch template, instances) and its template's versions."""
    found = []
    for kind, doc_id, parent, doc in rows(server, "SELECT kind, id, parent, doc FROM documents"):
        if sid in (parent or "") or sid in doc:
            found.append((kind, doc_id))
    template = [d for k, d in found if k == "ec2-launch-template"]
    for kind, doc_id, parent, _ in rows(server, "SELECT kind, id, parent, doc FROM documents"):
        if parent in template:
            found.append((kind, doc_id))
    return sorted(set(found))


def wait_until(predicate: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_metrics_and_logs_are_kept_for_a_bounded_window(env: tuple[RunningServer, Any, AgentClient]) -> None:
    server, _, agent = env
    sid = agent.register("chatty")["sourceServerID"]
    now = datetime.now(UTC)
    old = [{"timestamp": (now - timedelta(days=2, minutes=i)).timestamp(), "cpuPercent": 1.0, "memoryPercent": 2.0}
           for i in range(3)]
    recent = [{"timestamp": (now - timedelta(minutes=i)).timestamp(), "cpuPercent": 50.0, "memoryPercent": 60.0}
              for i in range(3)]
    agent.call("SendAgentMetricsForMgn", {"sourceServerID": sid, "metrics": old + recent})
    wait_until(lambda: count(server, "agent_metrics", sid) == 3, "metrics older than 24 h to go")
    assert {r[0] for r in rows(server, "SELECT cpu_percent FROM agent_metrics WHERE source_server_id = ?", sid)} == {50.0}

    more = [{"timestamp": (now - timedelta(seconds=i)).timestamp(), "cpuPercent": 70.0 + i, "memoryPercent": 60.0}
            for i in range(8)]
    agent.call("SendAgentMetricsForMgn", {"sourceServerID": sid, "metrics": more})
    agent.call("SendAgentLogsForMgn", {"sourceServerID": sid, "lines": [f"line {i}" for i in range(30)]})
    wait_until(lambda: count(server, "agent_metrics", sid) == 5 and count(server, "agent_logs", sid) == 10,
               "the per-server row limits")
    kept = [r[0] for r in rows(server, "SELECT line FROM agent_logs WHERE source_server_id = ? ORDER BY seq", sid)]
    assert kept == [f"line {i}" for i in range(20, 30)]  # the newest
    assert count(server, "agent_metrics", sid) == 5


def test_a_deleted_servers_records_go_with_it(env: tuple[RunningServer, Any, AgentClient]) -> None:
    server, mgn, agent = env
    keep = agent.register("keep")["sourceServerID"]
    gone = agent.register("gone")["sourceServerID"]
    for sid in (keep, gone):
        agent.call("SendAgentMetricsForMgn", {"sourceServerID": sid, "metrics": [
            {"timestamp": time.time(), "cpuPercent": 1.0, "memoryPercent": 1.0}]})
        agent.call("SendAgentLogsForMgn", {"sourceServerID": sid, "lines": ["hello"]})
    lt = mgn.get_launch_configuration(sourceServerID=gone)["ec2LaunchTemplateID"]
    template_docs = docs_of(server, gone)
    assert ("ec2-launch-template", lt) in template_docs and ("ec2-launch-template-version", f"{lt}:1") in template_docs
    groups_before = [d for k, d in rows(server, "SELECT kind, id FROM documents") if k == "ec2-security-group"]
    assert len(groups_before) >= 2

    mgn.disconnect_from_service(sourceServerID=gone)
    mgn.delete_source_server(sourceServerID=gone)
    for table in ("agent_metrics", "agent_logs", "agent_commands"):
        assert count(server, table, gone) == 0, table
    assert docs_of(server, gone) == []
    groups = [d for k, d in rows(server, "SELECT kind, id FROM documents") if k == "ec2-security-group"]
    assert len(groups) == len(groups_before) - 1  # its own group went, the other server's stayed
    assert count(server, "agent_metrics", keep) == 1 and count(server, "agent_logs", keep) == 1
    assert docs_of(server, keep)


def test_the_pruning_pass_removes_rows_of_servers_that_no_longer_exist(env: tuple[RunningServer, Any, AgentClient]) -> None:
    server, _, agent = env
    agent.register("present")
    with sqlite3.connect(server.data_dir / "rehost.db") as db:  # left by an older rehost, say
        db.execute("INSERT INTO agent_logs (source_server_id, at, line) VALUES ('s-00000000000000001', ?, 'x')",
                   (datetime.now(UTC).isoformat(),))
    wait_until(lambda: count(server, "agent_logs", "s-00000000000000001") == 0, "the orphaned row to go")


def test_replication_server_logs_are_bounded(env: tuple[RunningServer, Any, AgentClient]) -> None:
    server, _, _ = env
    logs = server.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    gone = logs / "rs-0000000000000000a.log"  # of a replication server that no longer exists
    gone.write_text("old\n")
    four_days_ago = time.time() - 4 * 86400
    os.utime(gone, (four_days_ago, four_days_ago))
    big = logs / "rs-0000000000000000b.log"
    big.write_bytes(b"l" * (LOG_FILE_LIMIT + 1))
    wait_until(lambda: not gone.exists() and big.stat().st_size == 0, "the logs to be bounded")
    assert (logs / "rs-0000000000000000b.log.1").stat().st_size == LOG_FILE_LIMIT + 1
