"""Typed access to the control-plane tables: load and save records as MGN-shaped documents.

Documents are dicts in MGN's output shapes; keys starting with ``_`` are rehost's own bookkeeping and never
reach a client (the serializer keeps only what the model declares).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, and_, delete, func, select, update

from rehost.db import schema
from rehost.errors import NotFound

# -- pagination ------------------------------------------------------------------------------------------

def encode_token(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": seq}).encode()).decode()


def decode_token(token: str | None) -> int | None:
    """The sequence number a nextToken points after, or None; a bad token is the caller's InvalidInput."""
    if not token:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(value["after"])
    except (ValueError, KeyError, TypeError) as exc:
        from rehost.errors import InvalidInput

        raise InvalidInput("The nextToken is not valid.") from exc


# -- source servers -------------------------------------------------------------------------------------

def load_server(conn: Connection, server_id: str, *, for_update: bool = False) -> dict[str, Any]:
    stmt = select(schema.source_servers.c.doc).where(schema.source_servers.c.id == server_id)
    if for_update and conn.engine.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    if row is None:
        raise NotFound(f"Source server {server_id} not found.", resource_id=server_id, resource_type="SOURCE_SERVER")
    return dict(row[0])


def insert_server(conn: Connection, doc: dict[str, Any], seq: int, identity_key: str | None) -> None:
    conn.execute(
        schema.source_servers.insert().values(
            id=doc["sourceServerID"], seq=seq, lifecycle_state=doc["lifeCycle"]["state"],
            is_archived=bool(doc.get("isArchived")), replication_type=doc.get("replicationType", "AGENT_BASED"),
            identity_key=identity_key, doc=doc,
        )
    )


def save_server(conn: Connection, doc: dict[str, Any]) -> None:
    conn.execute(
        update(schema.source_servers)
        .where(schema.source_servers.c.id == doc["sourceServerID"])
        .values(lifecycle_state=doc["lifeCycle"]["state"], is_archived=bool(doc.get("isArchived")), doc=doc)
    )


def find_server_by_identity(conn: Connection, identity_key: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(schema.source_servers.c.doc).where(schema.source_servers.c.identity_key == identity_key)
    ).first()
    return None if row is None else dict(row[0])


def query_servers(
    conn: Connection, *, ids: Sequence[str] | None = None, is_archived: bool | None = None,
    lifecycle_states: Sequence[str] | None = None, replication_types: Sequence[str] | None = None,
    after_seq: int | None = None, limit: int | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    t = schema.source_servers
    conds: list[ColumnElement[bool]] = []
    if ids:
        conds.append(t.c.id.in_(list(ids)))
    if is_archived is not None:
        conds.append(t.c.is_archived == is_archived)
    if lifecycle_states:
        conds.append(t.c.lifecycle_state.in_(list(lifecycle_states)))
    if replication_types:
        conds.append(t.c.replication_type.in_(list(replication_types)))
    if after_seq is not None:
        conds.append(t.c.seq > after_seq)
    stmt = select(t.c.seq, t.c.doc).order_by(t.c.seq)
    if conds:
        stmt = stmt.where(and_(*conds))
    if limit is not None:
        stmt = stmt.limit(limit)
    return [(int(r[0]), dict(r[1])) for r in conn.execute(stmt)]


def delete_server(conn: Connection, server_id: str) -> None:
    conn.execute(delete(schema.source_servers).where(schema.source_servers.c.id == server_id))


def count_servers(conn: Connection, *, active_only: bool) -> int:
    t = schema.source_servers
    stmt = select(func.count()).select_from(t).where(t.c.is_archived.is_(False))
    if active_only:
        stmt = stmt.where(t.c.lifecycle_state.notin_(["DISCONNECTED", "CUTOVER"]))
    return int(conn.execute(stmt).scalar_one())


# -- templates ------------------------------------------------------------------------------------------

def load_template(conn: Connection, kind: str, template_id: str) -> dict[str, Any]:
    row = conn.execute(
        select(schema.templates.c.doc).where(and_(schema.templates.c.id == template_id, schema.templates.c.kind == kind))
    ).first()
    if row is None:
        rtype = "REPLICATION_CONFIGURATION_TEMPLATE" if kind == "replication" else "LAUNCH_CONFIGURATION_TEMPLATE"
        raise NotFound(f"Template {template_id} not found.", resource_id=template_id, resource_type=rtype)
    return dict(row[0])


def list_templates(conn: Connection, kind: str, *, ids: Sequence[str] | None = None, after_seq: int | None = None,
                   limit: int | None = None) -> list[tuple[int, dict[str, Any]]]:
    t = schema.templates
    stmt = select(t.c.seq, t.c.doc).where(t.c.kind == kind).order_by(t.c.seq)
    if ids:
        stmt = stmt.where(t.c.id.in_(list(ids)))
    if after_seq is not None:
        stmt = stmt.where(t.c.seq > after_seq)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [(int(r[0]), dict(r[1])) for r in conn.execute(stmt)]


def save_template(conn: Connection, kind: str, template_id: str, doc: dict[str, Any], seq: int | None = None) -> None:
    t = schema.templates
    if seq is not None:
        conn.execute(t.insert().values(id=template_id, kind=kind, seq=seq, doc=doc))
    else:
        conn.execute(update(t).where(t.c.id == template_id).values(doc=doc))


def delete_template(conn: Connection, template_id: str) -> None:
    conn.execute(delete(schema.templates).where(schema.templates.c.id == template_id))


# -- jobs -----------------------------------------------------------------------------------------------

def load_job(conn: Connection, job_id: str) -> dict[str, Any]:
    row = conn.execute(select(schema.jobs.c.doc).where(schema.jobs.c.id == job_id)).first()
    if row is None:
        raise NotFound(f"Job {job_id} not found.", resource_id=job_id, resource_type="JOB")
    return dict(row[0])


def insert_job(conn: Connection, doc: dict[str, Any], seq: int, created_at: datetime) -> None:
    conn.execute(schema.jobs.insert().values(id=doc["jobID"], seq=seq, created_at=created_at, status=doc["status"], doc=doc))


def save_job(conn: Connection, doc: dict[str, Any]) -> None:
    conn.execute(update(schema.jobs).where(schema.jobs.c.id == doc["jobID"]).values(status=doc["status"], doc=doc))


def query_jobs(conn: Connection, *, ids: Sequence[str] | None = None, from_date: datetime | None = None,
               to_date: datetime | None = None, statuses: Iterable[str] | None = None,
               before_seq: int | None = None, limit: int | None = None) -> list[tuple[int, dict[str, Any]]]:
    t = schema.jobs
    stmt = select(t.c.seq, t.c.doc).order_by(t.c.seq.desc())  # newest first, as MGN lists jobs
    if ids:
        stmt = stmt.where(t.c.id.in_(list(ids)))
    if from_date is not None:
        stmt = stmt.where(t.c.created_at >= from_date)
    if to_date is not None:
        stmt = stmt.where(t.c.created_at <= to_date)
    if statuses is not None:
        stmt = stmt.where(t.c.status.in_(list(statuses)))
    if before_seq is not None:
        stmt = stmt.where(t.c.seq < before_seq)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [(int(r[0]), dict(r[1])) for r in conn.execute(stmt)]


def delete_job(conn: Connection, job_id: str) -> None:
    conn.execute(delete(schema.job_log_items).where(schema.job_log_items.c.job_id == job_id))
    conn.execute(delete(schema.jobs).where(schema.jobs.c.id == job_id))


def claim_job(conn: Connection, job_id: str, owner: str) -> dict[str, Any] | None:
    """Make a PENDING job STARTED and ``owner``'s, in one conditional UPDATE (so of processes racing for it,
    exactly one gets it: PostgreSQL's row lock makes the others see it STARTED); the job, or None if it
    was not PENDING. The caller's transaction keeps the row locked until it ends."""
    t = schema.jobs
    claimed = conn.execute(update(t).where(and_(t.c.id == job_id, t.c.status == "PENDING"))
                           .values(status="STARTED", owner=owner)).rowcount
    if not claimed:
        return None
    job = load_job(conn, job_id)
    job["status"] = "STARTED"
    save_job(conn, job)
    return job


def claimable_jobs(conn: Connection, limit: int) -> list[str]:
    """Up to ``limit`` PENDING jobs, oldest first; on PostgreSQL rows locked by another process's claim are
    skipped (``FOR UPDATE SKIP LOCKED``) and the ones returned stay locked for this transaction."""
    t = schema.jobs
    stmt = select(t.c.id).where(t.c.status == "PENDING").order_by(t.c.seq).limit(limit)
    if conn.engine.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return [r[0] for r in conn.execute(stmt)]


def started_jobs(conn: Connection) -> list[tuple[str, str | None]]:
    """(job ID, owner) of every STARTED job."""
    t = schema.jobs
    return [(r[0], r[1]) for r in conn.execute(select(t.c.id, t.c.owner).where(t.c.status == "STARTED").order_by(t.c.seq))]


def take_over_job(conn: Connection, job_id: str, dead_owner: str | None, owner: str) -> bool:
    """Make a STARTED job of ``dead_owner`` (None: of nobody) ``owner``'s; False if another process did first."""
    t = schema.jobs
    was = t.c.owner.is_(None) if dead_owner is None else t.c.owner == dead_owner
    return bool(conn.execute(update(t).where(and_(t.c.id == job_id, t.c.status == "STARTED", was))
                             .values(owner=owner)).rowcount)


def job_owner(conn: Connection, job_id: str) -> str | None:
    return conn.execute(select(schema.jobs.c.owner).where(schema.jobs.c.id == job_id)).scalar()


def fail_snapshot_requests(conn: Connection, server_ids: Sequence[str], message: str) -> int:
    """Fail the snapshot requests still open for ``server_ids`` (their requester stopped waiting)."""
    t = schema.agent_commands
    return int(conn.execute(
        update(t).where(and_(t.c.source_server_id.in_(list(server_ids)), t.c.type.in_(["SNAPSHOT", "SYNC_SNAPSHOT"]),
                             t.c.status.in_(["PENDING", "DELIVERED"])))
        .values(status="FAILED", result={"status": "FAILED", "message": message})).rowcount or 0)


def add_log_item(conn: Connection, job_id: str, item: dict[str, Any]) -> None:
    conn.execute(schema.job_log_items.insert().values(job_id=job_id, doc=item))


def log_items(conn: Connection, job_id: str, *, after_seq: int | None = None, limit: int | None = None) -> list[tuple[int, dict[str, Any]]]:
    t = schema.job_log_items
    stmt = select(t.c.seq, t.c.doc).where(t.c.job_id == job_id).order_by(t.c.seq)
    if after_seq is not None:
        stmt = stmt.where(t.c.seq > after_seq)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [(int(r[0]), dict(r[1])) for r in conn.execute(stmt)]


# -- tags -----------------------------------------------------------------------------------------------

def get_tags(conn: Connection, arn: str) -> dict[str, str]:
    rows = conn.execute(select(schema.tags.c.key, schema.tags.c.value).where(schema.tags.c.arn == arn))
    return {r[0]: r[1] for r in rows}


def put_tags(conn: Connection, arn: str, tags: dict[str, str]) -> None:
    t = schema.tags
    for key, value in tags.items():
        conn.execute(delete(t).where(and_(t.c.arn == arn, t.c.key == key)))
        conn.execute(t.insert().values(arn=arn, key=key, value=value))


def remove_tags(conn: Connection, arn: str, keys: Iterable[str] | None = None) -> None:
    t = schema.tags
    stmt = delete(t).where(t.c.arn == arn)
    if keys is not None:
        stmt = stmt.where(t.c.key.in_(list(keys)))
    conn.execute(stmt)


# -- generic documents (EC2 launch templates, instances, ...) ---------------------------------------------

def load_doc(conn: Connection, kind: str, doc_id: str) -> dict[str, Any] | None:
    t = schema.documents
    row = conn.execute(select(t.c.doc).where(and_(t.c.kind == kind, t.c.id == doc_id))).first()
    return None if row is None else dict(row[0])


def save_doc(conn: Connection, kind: str, doc_id: str, doc: dict[str, Any], *, seq: int, parent: str | None = None) -> None:
    t = schema.documents
    if conn.execute(select(t.c.id).where(and_(t.c.kind == kind, t.c.id == doc_id))).first():
        conn.execute(update(t).where(and_(t.c.kind == kind, t.c.id == doc_id)).values(doc=doc, parent=parent))
    else:
        conn.execute(t.insert().values(kind=kind, id=doc_id, seq=seq, parent=parent, doc=doc))


def list_docs(conn: Connection, kind: str, *, parent: str | None = None, ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    t = schema.documents
    stmt = select(t.c.doc).where(t.c.kind == kind).order_by(t.c.seq)
    if parent is not None:
        stmt = stmt.where(t.c.parent == parent)
    if ids:
        stmt = stmt.where(t.c.id.in_(list(ids)))
    return [dict(r[0]) for r in conn.execute(stmt)]


def delete_doc(conn: Connection, kind: str, doc_id: str) -> None:
    t = schema.documents
    conn.execute(delete(t).where(and_(t.c.kind == kind, t.c.id == doc_id)))


# -- what agents send: retention ------------------------------------------------------------------------

_AGENT_RECORDS = (schema.agent_metrics, schema.agent_logs)


def prune_agent_rows(conn: Connection, table: Table, *, before: datetime, keep: int) -> int:
    """Delete ``table``'s rows (agent_metrics or agent_logs) older than ``before``, and for each server
    all but its newest ``keep`` rows (by time, then arrival); returns the number deleted."""
    deleted = int(conn.execute(delete(table).where(table.c.at < before)).rowcount or 0)
    servers = [r[0] for r in conn.execute(select(table.c.source_server_id).group_by(table.c.source_server_id)
                                          .having(func.count() > keep))]
    for server_id in servers:
        beyond = (select(table.c.seq).where(table.c.source_server_id == server_id)
                  .order_by(table.c.at.desc(), table.c.seq.desc()).offset(keep))
        deleted += int(conn.execute(delete(table).where(table.c.seq.in_(beyond))).rowcount or 0)
    return deleted


def prune_finished_commands(conn: Connection, *, before: datetime) -> int:
    """Delete agent commands that ended (SUCCEEDED, FAILED) and were created before ``before``."""
    t = schema.agent_commands
    return int(conn.execute(delete(t).where(and_(t.c.status.in_(["SUCCEEDED", "FAILED"]), t.c.created_at < before)))
               .rowcount or 0)


def delete_agent_records(conn: Connection, server_id: str | None = None) -> int:
    """Delete the metrics, log lines and commands of ``server_id``, or (None) of every server that no longer
    exists; returns the number of rows deleted."""
    deleted = 0
    for table in (*_AGENT_RECORDS, schema.agent_commands):
        if server_id is not None:
            cond = table.c.source_server_id == server_id
        else:
            cond = table.c.source_server_id.notin_(select(schema.source_servers.c.id))
        deleted += int(conn.execute(delete(table).where(cond)).rowcount or 0)
    return deleted
