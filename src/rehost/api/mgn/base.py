"""What every resource group of `MgnService` stands on: the account, the hooks, paging, shared checks.

`MgnService` (`rehost.api.mgn.service`) is composed of one mixin per resource group, as moto composes a
large backend: templates, servers, lifecycle and launches, replication control, per-server configuration,
jobs, tags, applications, waves, import and export. Each mixin derives from `MgnBase`, which declares the
attributes the service provides (``store``, ``settings``, ``account``, ``hooks``) and the few helpers more
than one group needs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from rehost import ids
from rehost.config import Settings
from rehost.db import repo
from rehost.db.store import Store
from rehost.domain.jobs import JobStatus
from rehost.domain.lifecycle import LifeCycleState
from rehost.errors import Conflict, InvalidInput
from rehost.objectstore import ObjectStore


@dataclass
class Hooks:
    """What the service asks of the rest of the control plane once its transaction has committed."""

    submit_job: Callable[[str], None] = lambda job_id: None
    agent_command: Callable[[str, str], None] = lambda server_id, command: None
    release_replication: Callable[[str], None] = lambda server_id: None
    server_deleted: Callable[[str], object] = lambda server_id: None
    replication_changed: Callable[[dict[str, Any]], None] = lambda server_doc: None
    create_ec2_launch_template: Callable[[Connection, str, str], str] | None = None
    # Background work of an operation that answers at once (an import, an export): a thread by default.
    run_task: Callable[[Callable[[], None]], None] = lambda work: threading.Thread(
        target=work, name="mgn-task", daemon=True).start()


@dataclass
class Account:
    account_id: str
    region: str

    def arn(self, resource: str) -> str:
        return f"arn:aws:mgn:{self.region}:{self.account_id}:{resource}"


class MgnBase:
    """The attributes `MgnService` provides to its mixins, and helpers shared between resource groups."""

    store: Store
    settings: Settings
    account: Account
    hooks: Hooks
    objects: ObjectStore | None  # where import and export files live; None: the data directory's buckets

    def new_server_doc(self, conn: Connection, *, hostname: str, devices: list[dict[str, Any]],
                        lifecycle_state: LifeCycleState, replication_info: dict[str, Any],
                        properties: dict[str, Any], replication_wanted: bool, now: str | None) -> dict[str, Any]:
        """A new source server's document (not yet inserted): its replication and launch configurations
        from the account's templates, its own EC2 launch template (created in ``conn``)."""
        from rehost.api.mgn import templates  # imported here: the templates' operations stand on this module
        server_id = ids.new_id("s")
        rct = repo.list_templates(conn, "replication")
        lct = repo.list_templates(conn, "launch")
        rct_doc = rct[0][1] if rct else templates.DEFAULT_REPLICATION_TEMPLATE
        lct_doc = lct[0][1] if lct else templates.DEFAULT_LAUNCH_TEMPLATE
        doc: dict[str, Any] = {
            "sourceServerID": server_id,
            "arn": self.account.arn(f"source-server/{server_id}"),
            "isArchived": False,
            "replicationType": "AGENT_BASED",
            "lifeCycle": {"state": lifecycle_state.value, "addedToServiceDateTime": now,
                          "lastSeenByServiceDateTime": now},
            "dataReplicationInfo": replication_info,
            "sourceProperties": properties,
            "_replicationWanted": replication_wanted,
            "_replicationConfiguration": templates.replication_configuration_for(server_id, rct_doc, devices),
            "_launchDefaults": {"smallVolumeMaxSize": 0},
        }
        ec2_lt = self.hooks.create_ec2_launch_template(conn, server_id, hostname) \
            if self.hooks.create_ec2_launch_template else ids.new_id("lt")
        doc["_launchConfiguration"] = templates.launch_configuration_for(server_id, hostname, lct_doc, ec2_lt)
        return doc

    def public_server(self, conn: Connection, doc: dict[str, Any]) -> dict[str, Any]:
        out = dict(doc)
        out["tags"] = repo.get_tags(conn, doc["arn"])
        return out

    @staticmethod
    def _require_not_archived(doc: dict[str, Any]) -> None:
        if doc.get("isArchived"):
            raise Conflict(f"Source server {doc['sourceServerID']} is archived.", resource_id=doc["sourceServerID"],
                           resource_type="SOURCE_SERVER")

    def _active_job_ids(self, conn: Connection, server_ids: list[str]) -> list[str]:
        """The servers among ``server_ids`` that take part in a job still PENDING or STARTED."""
        busy: list[str] = []
        wanted = set(server_ids)
        for _, job in repo.query_jobs(conn, statuses=[JobStatus.PENDING.value, JobStatus.STARTED.value]):
            for p in job["participatingServers"]:
                if p["sourceServerID"] in wanted:
                    busy.append(p["sourceServerID"])
        return busy


def page(items: list[dict[str, Any]], rows: list[tuple[int, dict[str, Any]]], limit: int) -> dict[str, Any]:
    """A page of a listing fetched with ``limit + 1`` rows: the extra row only says there is a next page."""
    out: dict[str, Any] = {"items": items}
    if len(rows) > limit:
        out["nextToken"] = repo.encode_token(rows[limit - 1][0])
    return out


def parse_date(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return ids.parse_iso(value)
    except ValueError as exc:
        raise InvalidInput(f"{name} is not a valid date: {value}") from exc
