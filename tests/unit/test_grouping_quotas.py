"""The quotas of applications and waves (mgn-reference.md §5.4), on the service over a SQLite store, with
the limits lowered so that reaching them is quick."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rehost import ids
from rehost.api.mgn import grouping
from rehost.api.mgn.service import Account, MgnService
from rehost.config import Settings
from rehost.db import repo
from rehost.db.store import Store
from rehost.errors import QuotaExceeded


@pytest.fixture()
def mgn(tmp_path: Path) -> Iterator[MgnService]:
    settings = Settings(data_dir=tmp_path)
    store = Store(settings.db_url)
    service = MgnService(store, settings, Account("123456789012", "us-east-1"))
    service.initialize_service()
    yield service
    store.close()


def _servers(mgn: MgnService, count: int) -> list[str]:
    out = []
    with mgn.store.transaction() as conn:
        for _ in range(count):
            sid = ids.new_id("s")
            doc = {"sourceServerID": sid, "arn": mgn.account.arn(f"source-server/{sid}"), "isArchived": False,
                   "lifeCycle": {"state": "READY_FOR_TEST"}, "replicationType": "AGENT_BASED"}
            repo.insert_server(conn, doc, mgn.store.next_seq(conn, "source_server"), None)
            out.append(sid)
    return out


def test_servers_per_application(mgn: MgnService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grouping, "SERVERS_PER_APPLICATION", 2)
    app = mgn.create_application(name="app")["applicationID"]
    a, b, c = _servers(mgn, 3)
    mgn.associate_source_servers(app, [a, b])
    mgn.associate_source_servers(app, [a])  # already a member: no new one
    with pytest.raises(QuotaExceeded) as info:
        mgn.associate_source_servers(app, [c])
    assert info.value.quota_value == 2
    assert mgn.list_applications()["items"][0]["applicationAggregatedStatus"]["totalSourceServers"] == 2


def test_applications_per_wave(mgn: MgnService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grouping, "APPLICATIONS_PER_WAVE", 1)
    wave = mgn.create_wave(name="w")["waveID"]
    first, second = (mgn.create_application(name=n)["applicationID"] for n in ("a", "b"))
    mgn.associate_applications(wave, [first])
    with pytest.raises(QuotaExceeded):
        mgn.associate_applications(wave, [second])
    assert [a["applicationID"] for a in mgn.list_applications(filters={"waveIDs": [wave]})["items"]] == [first]


def test_active_and_archived_groups(mgn: MgnService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grouping, "MAX_ACTIVE", 2)
    monkeypatch.setattr(grouping, "MAX_ARCHIVED", 1)
    one, two = (mgn.create_wave(name=n)["waveID"] for n in ("one", "two"))
    with pytest.raises(QuotaExceeded):
        mgn.create_wave(name="three")
    mgn.archive_wave(one)
    mgn.create_wave(name="three")  # an archived wave no longer counts as active
    with pytest.raises(QuotaExceeded):
        mgn.archive_wave(two)  # one archived wave already
    with pytest.raises(QuotaExceeded):
        mgn.unarchive_wave(one)  # two active ones already
    mgn.create_application(name="apps have their own count")
