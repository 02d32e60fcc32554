"""The pruning queries (`rehost.db.repo`) on both databases: time window, per-server row limit, finished
commands, and the rows of servers that no longer exist."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from api.conftest import postgres_cluster  # noqa: F401  (session fixture)
from rehost import ids
from rehost.db import repo, schema
from rehost.db.store import Store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'rehost.db'}"
    else:
        url = request.getfixturevalue("postgres_cluster").new_database()
    s = Store(url)
    yield s
    s.close()


def _count(store: Store, table: object, sid: str) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)  # type: ignore[arg-type]
                                .where(table.c.source_server_id == sid)).scalar_one())  # type: ignore[attr-defined]


def test_pruning_queries(store: Store) -> None:
    now = ids.utcnow()
    with store.transaction() as conn:
        repo.insert_server(conn, {"sourceServerID": "s-00000000000000001", "lifeCycle": {"state": "NOT_READY"}}, 1, None)
        for sid in ("s-00000000000000001", "s-00000000000000009"):  # ...9 does not exist (any more)
            for minutes in [3000, 3001, 3002, *range(8)]:  # three rows two days old, eight recent
                conn.execute(schema.agent_metrics.insert().values(
                    source_server_id=sid, at=now - timedelta(minutes=minutes), cpu_percent=float(minutes),
                    memory_percent=1.0))
            for i in range(30):
                conn.execute(schema.agent_logs.insert().values(source_server_id=sid, at=now, line=f"line {i}"))
            for n, (status, age) in enumerate([("SUCCEEDED", 100), ("FAILED", 1), ("PENDING", 100)]):
                conn.execute(schema.agent_commands.insert().values(
                    id=f"cmd-{sid[-1]}{n}", seq=n, source_server_id=sid, type="SNAPSHOT", status=status,
                    created_at=now - timedelta(hours=age)))

    with store.transaction() as conn:
        assert repo.prune_agent_rows(conn, schema.agent_metrics, before=now - timedelta(hours=24), keep=5) == 2 * 6
        assert repo.prune_agent_rows(conn, schema.agent_logs, before=now - timedelta(hours=72), keep=10) == 2 * 20
        assert repo.prune_finished_commands(conn, before=now - timedelta(hours=72)) == 2
    with store.read() as conn:
        kept = conn.execute(select(schema.agent_metrics.c.cpu_percent)
                            .where(schema.agent_metrics.c.source_server_id == "s-00000000000000001")).scalars()
        assert sorted(kept) == [0.0, 1.0, 2.0, 3.0, 4.0]  # the newest five
        lines = conn.execute(select(schema.agent_logs.c.line).order_by(schema.agent_logs.c.seq)
                             .where(schema.agent_logs.c.source_server_id == "s-00000000000000001")).scalars()
        assert list(lines) == [f"line {i}" for i in range(20, 30)]
    assert _count(store, schema.agent_commands, "s-00000000000000001") == 2  # the recent and the pending one

    with store.transaction() as conn:
        assert repo.delete_agent_records(conn) == 5 + 10 + 2  # the rows of the server that is gone
    assert _count(store, schema.agent_logs, "s-00000000000000009") == 0
    with store.transaction() as conn:
        assert repo.delete_agent_records(conn, "s-00000000000000001") == 5 + 10 + 2
    for table in (schema.agent_metrics, schema.agent_logs, schema.agent_commands):
        assert _count(store, table, "s-00000000000000001") == 0
