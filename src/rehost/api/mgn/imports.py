"""Import and export of the inventory: StartImport, ListImports, ListImportErrors, StartExport, ListExports,
ListExportErrors.

StartImport reads an inventory CSV (`rehost.api.mgn.inventory`) from a bucket of rehost's object storage
(`rehost.objectstore`) and creates or updates the waves, applications and source servers its rows name;
StartExport writes the inventory in the same format. Both answer at once with a task in status PENDING and
do the work in the background (``hooks.run_task``): STARTED while it runs, then SUCCEEDED, or FAILED when
the file could not be read or written, or when no row of the file could be applied.

Each row of an import is applied in its own transaction, together with the task's progress and summary:
a row is applied whole or not at all. A row that cannot be applied is one ImportTaskError (rowNumber as a
spreadsheet shows it, the header being row 1): VALIDATION_ERROR for what is wrong in the row itself,
PROCESSING_ERROR for what conflicts with the account (an archived application, a full wave, ...).

What a row does:
- a wave or application is found by its ID column if given (and then renamed to the row's name), else
  by name (case-insensitively), else created; its description and tags are set from the row;
- a source server is found by ``mgn:server:id`` if given, else by its user-provided ID, else created:
  an imported server waits, DISCONNECTED, for its agent, and an agent installed with the same
  ``--user-provided-id`` takes the record over (as it would take over a disconnected server);
- the file is the plan: a server row's application becomes the server's application and an application
  row's wave becomes its wave, moving them out of any other;
- empty cells change nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, update

from rehost import errors, ids
from rehost.api.mgn import inventory as inv
from rehost.api.mgn.base import page
from rehost.api.mgn.grouping import APPLICATION, WAVE, GroupKind, GroupOps, query_docs
from rehost.db import repo, schema
from rehost.domain.lifecycle import LifeCycleState
from rehost.domain.replication import DataReplicationState
from rehost.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from rehost.objectstore import ObjectStore, check_bucket, check_key, for_data_dir

log = logging.getLogger("rehost.api.mgn.imports")

IMPORT, IMPORT_ERROR, EXPORT, EXPORT_ERROR = "mgn-import", "mgn-import-error", "mgn-export", "mgn-export-error"
PENDING, STARTED, FAILED, SUCCEEDED = "PENDING", "STARTED", "FAILED", "SUCCEEDED"


@dataclass
class _Counts:
    """IDs created and modified by an import (an entity created by the import is not also "modified")."""

    created: dict[str, set[str]] = field(default_factory=lambda: {"waves": set(), "applications": set(),
                                                                   "servers": set()})
    modified: dict[str, set[str]] = field(default_factory=lambda: {"waves": set(), "applications": set(),
                                                                    "servers": set()})

    def add(self, other: _Counts) -> None:
        for kind in self.created:
            self.created[kind] |= other.created[kind]
            self.modified[kind] |= other.modified[kind] - self.created[kind]

    def summary(self) -> dict[str, Any]:
        return {kind: {"createdCount": len(self.created[kind]),
                       "modifiedCount": len(self.modified[kind] - self.created[kind])} for kind in self.created}


def _public(conn: Connection, doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if not k.startswith("_")}
    out["tags"] = repo.get_tags(conn, doc["arn"])
    return out


class ImportExportOps(GroupOps):
    """Mixin of `MgnService`: import and export, named after their operations (see the module's docstring)."""

    def object_store(self) -> ObjectStore:
        return self.objects if self.objects is not None else for_data_dir(self.settings.data_dir)

    def _check_owner(self, owner: str | None) -> None:
        if owner and owner != self.account.account_id:
            raise InvalidInput(f"Bucket owner {owner} is not this account ({self.account.account_id}); rehost's "
                               "object storage holds this account's buckets only.")

    # -- tasks ----------------------------------------------------------------------------------------

    def _new_task(self, conn: Connection, kind: str, prefix: str, fields: dict[str, Any],
                  tags: dict[str, str] | None) -> dict[str, Any]:
        task_id = ids.new_id(prefix)
        doc = {f"{prefix}ID": task_id, "arn": self.account.arn(f"{prefix}/{task_id}"), **fields,
               "creationDateTime": ids.iso(ids.utcnow()), "status": PENDING, "progressPercentage": 0.0}
        repo.save_doc(conn, kind, task_id, doc, seq=self.store.next_seq(conn, kind))
        repo.put_tags(conn, doc["arn"], tags or {})
        return doc

    def _set_task(self, conn: Connection, kind: str, task_id: str, **changes: Any) -> dict[str, Any]:
        doc = repo.load_doc(conn, kind, task_id)
        if doc is None:
            raise NotFound(f"Task {task_id} not found.", resource_id=task_id)
        doc.update(changes)
        if changes.get("status") in (FAILED, SUCCEEDED):
            doc["endDateTime"] = ids.iso(ids.utcnow())
        repo.save_doc(conn, kind, task_id, doc, seq=0)
        return doc

    def _task_error(self, conn: Connection, kind: str, task_id: str, doc: dict[str, Any]) -> None:
        seq = self.store.next_seq(conn, kind)
        repo.save_doc(conn, kind, f"{task_id}:{seq}", {"errorDateTime": ids.iso(ids.utcnow()), **doc}, seq=seq,
                      parent=task_id)

    def _list_tasks(self, kind: str, id_key: str, filters: dict[str, Any] | None, max_results: int | None,
                    token: str | None) -> dict[str, Any]:
        limit = max_results or 1000
        after = repo.decode_token(token)
        wanted = (filters or {}).get(id_key + "s") or None
        with self.store.read() as conn:
            rows = [(seq, doc) for seq, doc in query_docs(conn, kind, ids=wanted) if after is None or seq > after]
            items = [_public(conn, doc) for _, doc in rows[:limit]]
        return page(items, rows, limit)

    def _list_task_errors(self, kind: str, error_kind: str, noun: str, task_id: str, max_results: int | None,
                          token: str | None) -> dict[str, Any]:
        limit = max_results or 1000
        after = repo.decode_token(token)
        with self.store.read() as conn:
            if repo.load_doc(conn, kind, task_id) is None:
                # ListImportErrors and ListExportErrors declare no ResourceNotFoundException.
                raise InvalidInput(f"{noun} {task_id} not found.")
            rows = [(seq, doc) for seq, doc in query_docs(conn, error_kind, parents=[task_id])
                    if after is None or seq > after]
        return page([doc for _, doc in rows[:limit]], rows, limit)

    def _run_safely(self, kind: str, error_kind: str, task_id: str, work: Callable[[], None]) -> None:
        """Run a task's work; a fault of rehost's own fails the task with its error rather than leave it
        STARTED for ever."""
        try:
            work()
        except Exception as exc:
            log.exception("%s %s failed", kind, task_id)
            error: dict[str, Any] = {"errorData": {"rawError": f"internal error: {exc}"}}
            if kind == IMPORT:
                error["errorType"] = "PROCESSING_ERROR"  # an export error has no type
            with self.store.transaction() as conn:
                self._task_error(conn, error_kind, task_id, error)
                self._set_task(conn, kind, task_id, status=FAILED)

    # -- import ---------------------------------------------------------------------------------------

    def start_import(self, s3BucketSource: dict[str, Any], clientToken: str | None = None,
                     tags: dict[str, str] | None = None) -> dict[str, Any]:
        bucket, key = check_bucket(s3BucketSource["s3Bucket"]), check_key(s3BucketSource["s3Key"])
        self._check_owner(s3BucketSource.get("s3BucketOwner"))
        source = {"s3Bucket": bucket, "s3Key": key, "s3BucketOwner": self.account.account_id}
        if clientToken:
            with self.store.read() as conn:
                for _, doc in query_docs(conn, IMPORT):
                    if doc.get("_clientToken") == clientToken:
                        if doc["s3BucketSource"] != source:
                            raise Conflict(f"clientToken {clientToken} was used for another import ({doc['importID']}).",
                                           resource_id=doc["importID"], resource_type="IMPORT")
                        return {"importTask": _public(conn, doc)}
        data = self.object_store().get(bucket, key)  # NotFound: ResourceNotFoundException, as MGN
        empty = {"createdCount": 0, "modifiedCount": 0}
        with self.store.transaction() as conn:
            doc = self._new_task(conn, IMPORT, "import", {
                "s3BucketSource": source, "summary": {k: dict(empty) for k in ("waves", "applications", "servers")},
                "_clientToken": clientToken}, tags)
            result = {"importTask": _public(conn, doc)}
        import_id = doc["importID"]
        self.hooks.run_task(lambda: self._run_safely(IMPORT, IMPORT_ERROR, import_id,
                                                     lambda: self._run_import(import_id, data)))
        return result

    def list_imports(self, filters: dict[str, Any] | None = None, maxResults: int | None = None,
                     nextToken: str | None = None) -> dict[str, Any]:
        return self._list_tasks(IMPORT, "importID", filters, maxResults, nextToken)

    def list_import_errors(self, importID: str, maxResults: int | None = None,
                           nextToken: str | None = None) -> dict[str, Any]:
        return self._list_task_errors(IMPORT, IMPORT_ERROR, "Import", importID, maxResults, nextToken)

    def _run_import(self, import_id: str, data: bytes) -> None:
        with self.store.transaction() as conn:
            self._set_task(conn, IMPORT, import_id, status=STARTED)
        try:
            _, rows = inv.read(data)
        except inv.FileError as exc:
            with self.store.transaction() as conn:
                self._task_error(conn, IMPORT_ERROR, import_id, {
                    "errorType": "VALIDATION_ERROR", "errorData": {"rowNumber": 1, "rawError": str(exc)}})
                self._set_task(conn, IMPORT, import_id, status=FAILED, progressPercentage=100.0)
            return
        counts, applied = _Counts(), 0
        for done, (number, values) in enumerate(rows, start=1):
            row, problems = inv.parse_row(number, values, self.account.account_id, self.account.region)
            progress = {"progressPercentage": round(100.0 * done / len(rows), 2)}
            if problems:
                with self.store.transaction() as conn:
                    self._task_error(conn, IMPORT_ERROR, import_id, {
                        "errorType": "VALIDATION_ERROR",
                        "errorData": {"rowNumber": number, "rawError": "; ".join(problems)}})
                    self._set_task(conn, IMPORT, import_id, **progress)
                continue
            row_counts, named = _Counts(), dict[str, str]()  # named: the IDs the row reached, for its error
            try:
                with self.store.transaction() as conn:
                    self._apply_row(conn, row, row_counts, named)
                    merged = _Counts()
                    merged.add(counts)
                    merged.add(row_counts)
                    self._set_task(conn, IMPORT, import_id, summary=merged.summary(), **progress)
                counts, applied = merged, applied + 1
            except errors.RehostError as exc:
                with self.store.transaction() as conn:
                    self._task_error(conn, IMPORT_ERROR, import_id, {
                        "errorType": "PROCESSING_ERROR",
                        "errorData": {"rowNumber": number, "rawError": exc.message, **named}})
                    self._set_task(conn, IMPORT, import_id, **progress)
        with self.store.transaction() as conn:
            status = FAILED if rows and not applied else SUCCEEDED
            self._set_task(conn, IMPORT, import_id, status=status, progressPercentage=100.0)

    def _apply_row(self, conn: Connection, row: inv.Row, counts: _Counts, named: dict[str, str]) -> None:
        wave = self._upsert_group(conn, WAVE, row.wave, counts, named) if row.wave else None
        app = self._upsert_group(conn, APPLICATION, row.app, counts, named) if row.app else None
        if app is not None and wave is not None and app.get("waveID") != wave["waveID"]:
            self._move_member(conn, WAVE, app, wave["waveID"])
            counts.modified["applications"].add(app["applicationID"])
        if row.server is not None:
            server = self._upsert_server(conn, row.server, counts, named)
            if app is not None and server.get("applicationID") != app["applicationID"]:
                self._move_member(conn, APPLICATION, server, app["applicationID"])
                counts.modified["servers"].add(server["sourceServerID"])

    def _move_member(self, conn: Connection, g: GroupKind, member: dict[str, Any], group_id: str) -> None:
        """Make ``member`` (a server, or an application) a member of group ``group_id`` (an application, or a
        wave) whatever it was a member of, and record the aggregated status of the groups concerned."""
        self._load_active(conn, g, group_id)
        self._check_capacity(conn, g, group_id, 1)
        previous = member.get(g.id_key)
        member[g.id_key] = group_id
        self._save_member(conn, g, member)
        for group in self._load_groups(conn, g, [gid for gid in (previous, group_id) if gid]):
            self._refresh_with_parent(conn, g, group)

    def _upsert_group(self, conn: Connection, g: GroupKind, spec: inv.GroupSpec, counts: _Counts,
                      named: dict[str, str]) -> dict[str, Any]:
        plural = "waves" if g is WAVE else "applications"
        if spec.id:
            doc: dict[str, Any] | None = self._load_group(conn, g, spec.id)
        else:
            folded = spec.name.casefold()
            doc = next((d for _, d in query_docs(conn, g.kind) if d["name"].casefold() == folded), None)
        if doc is None:
            doc = self._insert_group(conn, g, spec.name, spec.description, spec.tags)
            counts.created[plural].add(doc[g.id_key])
            named[g.id_key] = doc[g.id_key]
            self._present_in(conn, g, [doc])
            return doc
        named[g.id_key] = doc[g.id_key]
        self._require_active(g, doc)
        changed = False
        if spec.name != doc["name"]:
            self._check_name(conn, g, spec.name, own_id=doc[g.id_key])
            doc["name"], changed = spec.name, True
        if spec.description is not None and spec.description != doc.get("description"):
            doc["description"], changed = spec.description, True
        changed = self._merge_tags(conn, doc["arn"], spec.tags) or changed
        if changed:
            doc["lastModifiedDateTime"] = ids.iso(ids.utcnow())
            self._save_group(conn, g, doc)
            counts.modified[plural].add(doc[g.id_key])
        return doc

    @staticmethod
    def _merge_tags(conn: Connection, arn: str, tags: dict[str, str]) -> bool:
        current = repo.get_tags(conn, arn)
        changes = {k: v for k, v in tags.items() if current.get(k) != v}
        if len({**current, **changes}) > 50:
            raise InvalidInput(f"{arn} would have more than 50 tags.")
        repo.put_tags(conn, arn, changes)
        return bool(changes)

    def _upsert_server(self, conn: Connection, spec: inv.ServerSpec, counts: _Counts,
                       named: dict[str, str]) -> dict[str, Any]:
        doc: dict[str, Any] | None
        if spec.id:
            doc = repo.load_server(conn, spec.id, for_update=True)
        else:
            doc = next((d for _, d in repo.query_servers(conn, is_archived=False)
                        if d.get("userProvidedID") == spec.user_provided_id), None)
        if doc is None:
            doc = self._import_server(conn, spec.user_provided_id)
            counts.created["servers"].add(doc["sourceServerID"])
        sid = doc["sourceServerID"]
        named["sourceServerID"] = sid
        if doc.get("isArchived"):
            raise Conflict(f"Source server {sid} is archived.", resource_id=sid, resource_type="SOURCE_SERVER")
        before = repr(doc), repo.get_tags(conn, doc["arn"])
        if spec.user_provided_id and doc.get("userProvidedID") != spec.user_provided_id:
            if doc.get("userProvidedID"):
                raise Conflict(f"Source server {sid} has user-provided ID {doc['userProvidedID']}; it cannot be "
                               "changed once set.", resource_id=sid, resource_type="SOURCE_SERVER")
            doc["userProvidedID"] = spec.user_provided_id
        if spec.platform:
            doc["_platform"] = spec.platform
        if spec.fqdn:
            doc["fqdnForActionFramework"] = spec.fqdn
        launch = doc["_launchConfiguration"]
        if spec.os_byol is not None:
            launch["licensing"] = {**(launch.get("licensing") or {}), "osByol": spec.os_byol}
        if spec.copy_tags is not None:
            launch["copyTags"] = spec.copy_tags
        tags_changed = self._merge_tags(conn, doc["arn"], spec.tags)
        if tags_changed or repr(doc) != before[0]:
            repo.save_server(conn, doc)
            counts.modified["servers"].add(sid)
        return doc

    def _import_server(self, conn: Connection, user_provided_id: str) -> dict[str, Any]:
        """A source server created by an import: DISCONNECTED until an agent with its user-provided ID
        registers (`rehost.api.agent`)."""
        quota = self.settings.quotas.non_archived_source_servers
        if repo.count_servers(conn, active_only=False) >= quota:
            raise QuotaExceeded(f"You have reached the quota of {quota} non-archived source servers.",
                                quota_code="L-50980698", quota_value=quota)
        now = ids.iso(ids.utcnow())
        doc = self.new_server_doc(
            conn, hostname=user_provided_id, devices=[], lifecycle_state=LifeCycleState.DISCONNECTED,
            replication_info={"dataReplicationState": DataReplicationState.DISCONNECTED.value, "replicatedDisks": []},
            properties={"identificationHints": {}, "lastUpdatedDateTime": now}, replication_wanted=False, now=now)
        doc["userProvidedID"] = user_provided_id
        key = "upid:" + user_provided_id  # the identity an agent installed with this user-provided ID claims
        held = repo.find_server_by_identity(conn, key)
        if held is not None:  # an archived record of the same machine: free its identity, as registration does
            conn.execute(update(schema.source_servers).where(schema.source_servers.c.id == held["sourceServerID"])
                         .values(identity_key=None))
        repo.insert_server(conn, doc, self.store.next_seq(conn, "source_server"), key)
        return doc

    # -- export ---------------------------------------------------------------------------------------

    def start_export(self, s3Bucket: str, s3Key: str, s3BucketOwner: str | None = None,
                     tags: dict[str, str] | None = None) -> dict[str, Any]:
        bucket, key = check_bucket(s3Bucket), check_key(s3Key)
        self._check_owner(s3BucketOwner)
        try:
            self.object_store().list(bucket)
        except NotFound as exc:  # StartExport declares no ResourceNotFoundException
            raise InvalidInput(f"Bucket {bucket} does not exist; MGN does not create the bucket it exports to.") from exc
        with self.store.transaction() as conn:
            doc = self._new_task(conn, EXPORT, "export", {
                "s3Bucket": bucket, "s3Key": key, "s3BucketOwner": self.account.account_id,
                "summary": {"serversCount": 0, "applicationsCount": 0, "wavesCount": 0}}, tags)
            result = {"exportTask": _public(conn, doc)}
        export_id = doc["exportID"]
        self.hooks.run_task(lambda: self._run_safely(EXPORT, EXPORT_ERROR, export_id,
                                                     lambda: self._run_export(export_id, bucket, key)))
        return result

    def list_exports(self, filters: dict[str, Any] | None = None, maxResults: int | None = None,
                     nextToken: str | None = None) -> dict[str, Any]:
        return self._list_tasks(EXPORT, "exportID", filters, maxResults, nextToken)

    def list_export_errors(self, exportID: str, maxResults: int | None = None,
                           nextToken: str | None = None) -> dict[str, Any]:
        return self._list_task_errors(EXPORT, EXPORT_ERROR, "Export", exportID, maxResults, nextToken)

    def _inventory_rows(self, conn: Connection) -> tuple[list[dict[str, str]], dict[str, int]]:
        """The export's rows (a row per server, then per application without servers, then per wave without
        applications; archived ones left out) and its summary."""
        base = {inv.ACCOUNT: self.account.account_id, inv.REGION: self.account.region}
        waves = {d["waveID"]: d for _, d in query_docs(conn, WAVE.kind) if not d.get("isArchived")}
        apps = {d["applicationID"]: d for _, d in query_docs(conn, APPLICATION.kind) if not d.get("isArchived")}
        servers = [d for _, d in repo.query_servers(conn, is_archived=False)]
        wave_cols = {wid: inv.group_columns("wave", d, repo.get_tags(conn, d["arn"])) for wid, d in waves.items()}
        app_cols = {aid: {**inv.group_columns("app", d, repo.get_tags(conn, d["arn"])),
                          **wave_cols.get(d.get("waveID") or "", {})} for aid, d in apps.items()}
        rows = [{**base, **app_cols.get(s.get("applicationID") or "", {}),
                 **inv.server_columns(s, repo.get_tags(conn, s["arn"]))} for s in servers]
        with_servers = {s.get("applicationID") for s in servers}
        rows += [{**base, **cols} for aid, cols in app_cols.items() if aid not in with_servers]
        with_apps = {a.get("waveID") for a in apps.values()}
        rows += [{**base, **cols} for wid, cols in wave_cols.items() if wid not in with_apps]
        return rows, {"serversCount": len(servers), "applicationsCount": len(apps), "wavesCount": len(waves)}

    def _run_export(self, export_id: str, bucket: str, key: str) -> None:
        with self.store.transaction() as conn:
            self._set_task(conn, EXPORT, export_id, status=STARTED)
        with self.store.read() as conn:
            rows, summary = self._inventory_rows(conn)
        try:
            self.object_store().put(bucket, key, inv.write(rows))
        except (errors.RehostError, OSError) as exc:
            message = exc.message if isinstance(exc, errors.RehostError) else f"cannot write s3://{bucket}/{key}: {exc}"
            with self.store.transaction() as conn:
                self._task_error(conn, EXPORT_ERROR, export_id, {"errorData": {"rawError": message}})
                self._set_task(conn, EXPORT, export_id, status=FAILED, progressPercentage=100.0)
            return
        with self.store.transaction() as conn:
            self._set_task(conn, EXPORT, export_id, status=SUCCEEDED, progressPercentage=100.0, summary=summary)
