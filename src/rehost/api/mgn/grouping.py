"""What applications and waves share: records, names, archiving, listing and aggregated status.

An application groups source servers and a wave groups applications (mgn-reference.md §1.8): a source
server names its application in its own document (``applicationID``, MGN's field), an application names
its wave (``waveID``). Both live in the generic ``documents`` table (kinds ``mgn-application`` and
``mgn-wave``; an application's ``parent`` is its wave, so the ``waveIDs`` filter is an indexed query).

MGN's rules kept here:
- names are unique per account and region, compared case-insensitively (MGN's console guide);
- an archived application or wave refuses changes (update, associations) with ConflictException until
  it is unarchived; archiving needs every member archived first (servers of an application, applications
  of a wave), so nothing still migrating disappears from the default views; deleting needs no members;
- the quotas of §5.4: 200 active and 10,000 archived of each, 200 servers per application, 1,000
  applications per wave.

The aggregated status is computed from the members on every read (`rehost.domain.rollup`);
``lastUpdateDateTime`` is when that status was last seen to change, kept in the record (``_status``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from rehost import ids
from rehost.api.mgn.base import MgnBase
from rehost.db import repo, schema
from rehost.domain import rollup
from rehost.errors import Conflict, NotFound, QuotaExceeded

MAX_ACTIVE = 200
MAX_ARCHIVED = 10_000
SERVERS_PER_APPLICATION = 200
APPLICATIONS_PER_WAVE = 1_000


def query_docs(conn: Connection, kind: str, *, ids: Sequence[str] | None = None,
                parents: Sequence[str] | None = None) -> list[tuple[int, dict[str, Any]]]:
    """Documents of ``kind`` in creation order with their ``seq`` (for paging), by ID and by parent."""
    t = schema.documents
    stmt = select(t.c.seq, t.c.doc).where(t.c.kind == kind).order_by(t.c.seq)
    if ids is not None:
        stmt = stmt.where(t.c.id.in_(list(ids)))
    if parents is not None:
        stmt = stmt.where(t.c.parent.in_(list(parents)))
    return [(int(r[0]), dict(r[1])) for r in conn.execute(stmt)]


def servers_of_applications(conn: Connection, application_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The source server documents of each application (also DescribeSourceServers' ``applicationIDs``)."""
    out: dict[str, list[dict[str, Any]]] = {app_id: [] for app_id in application_ids}
    for _, server in repo.query_servers(conn):
        if server.get("applicationID") in out:
            out[server["applicationID"]].append(server)
    return out


@dataclass(frozen=True)
class GroupKind:
    kind: str           # documents.kind
    prefix: str         # ID prefix
    noun: str           # "Application" / "Wave", for messages
    resource_type: str  # ConflictException / ResourceNotFoundException resourceType
    id_key: str         # "applicationID" / "waveID"
    status_key: str     # "applicationAggregatedStatus" / "waveAggregatedStatus"


APPLICATION = GroupKind("mgn-application", "app", "Application", "APPLICATION", "applicationID",
                        "applicationAggregatedStatus")
WAVE = GroupKind("mgn-wave", "wave", "Wave", "WAVE", "waveID", "waveAggregatedStatus")


class GroupOps(MgnBase):
    """Mixin of `MgnService`: the shared half of applications and waves. The operations themselves are in
    `rehost.api.mgn.applications` and `rehost.api.mgn.waves`."""

    # -- records --------------------------------------------------------------------------------------

    def _load_group(self, conn: Connection, g: GroupKind, group_id: str) -> dict[str, Any]:
        doc = repo.load_doc(conn, g.kind, group_id)
        if doc is None:
            raise NotFound(f"{g.noun} {group_id} not found.", resource_id=group_id, resource_type=g.resource_type)
        return doc

    def _save_group(self, conn: Connection, g: GroupKind, doc: dict[str, Any]) -> None:
        """Save a group loaded in this transaction (``seq`` is only used on insert, at creation)."""
        parent = doc.get("waveID") if g is APPLICATION else None  # an application's wave; a wave has none
        repo.save_doc(conn, g.kind, doc[g.id_key], doc, seq=0, parent=parent)

    def _load_groups(self, conn: Connection, g: GroupKind, group_ids: Sequence[str]) -> list[dict[str, Any]]:
        found = {doc[g.id_key]: doc for _, doc in query_docs(conn, g.kind, ids=list(group_ids))}
        for group_id in group_ids:
            if group_id not in found:
                raise NotFound(f"{g.noun} {group_id} not found.", resource_id=group_id, resource_type=g.resource_type)
        return [found[group_id] for group_id in dict.fromkeys(group_ids)]

    @staticmethod
    def _conflict(g: GroupKind, group_id: str, message: str) -> Conflict:
        return Conflict(message, resource_id=group_id, resource_type=g.resource_type)

    def _require_active(self, g: GroupKind, doc: dict[str, Any]) -> None:
        if doc.get("isArchived"):
            raise self._conflict(g, doc[g.id_key], f"{g.noun} {doc[g.id_key]} is archived; unarchive it first.")

    def _load_active(self, conn: Connection, g: GroupKind, group_id: str) -> dict[str, Any]:
        doc = self._load_group(conn, g, group_id)
        self._require_active(g, doc)
        return doc

    def _check_capacity(self, conn: Connection, g: GroupKind, group_id: str, joining: int) -> None:
        """Refuse (ServiceQuotaExceededException) ``joining`` more members than the group may have."""
        limit = SERVERS_PER_APPLICATION if g is APPLICATION else APPLICATIONS_PER_WAVE
        if len(self._members(conn, g, [group_id])[group_id]) + joining > limit:
            noun = self._member_noun(g)
            raise QuotaExceeded(f"A {g.noun.lower()} can have at most {limit} {noun}s.",
                                quota_code=f"{noun.replace(' ', '_')}s_per_{g.noun.lower()}", quota_value=limit)

    def _check_name(self, conn: Connection, g: GroupKind, name: str, own_id: str | None = None) -> None:
        folded = name.casefold()
        for _, doc in query_docs(conn, g.kind):
            if doc["name"].casefold() == folded and doc[g.id_key] != own_id:
                raise self._conflict(g, doc[g.id_key], f"{g.noun} name {name!r} is already used by {doc[g.id_key]}; "
                                                       f"{g.noun.lower()} names are unique (case-insensitive).")

    def _check_quota(self, conn: Connection, g: GroupKind, archived: bool) -> None:
        limit = MAX_ARCHIVED if archived else MAX_ACTIVE
        count = sum(1 for _, doc in query_docs(conn, g.kind) if bool(doc.get("isArchived")) == archived)
        if count >= limit:
            state = "archived" if archived else "active"
            raise QuotaExceeded(f"At most {limit} {state} {g.noun.lower()}s are allowed.",
                                quota_code=f"{state}_{g.noun.lower()}s", quota_value=limit)

    # -- operations shared by both kinds ---------------------------------------------------------------

    def _create_group(self, g: GroupKind, name: str, description: str | None,
                      tags: dict[str, str] | None) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = self._insert_group(conn, g, name, description, tags)
            return self._present_in(conn, g, [doc])[0]

    def _insert_group(self, conn: Connection, g: GroupKind, name: str, description: str | None,
                      tags: dict[str, str] | None) -> dict[str, Any]:
        """A new group in the caller's transaction (its name and the quota checked); its document."""
        self._check_name(conn, g, name)
        self._check_quota(conn, g, archived=False)
        group_id = ids.new_id(g.prefix)
        now = ids.iso(ids.utcnow())
        doc: dict[str, Any] = {g.id_key: group_id, "arn": self.account.arn(f"{g.noun.lower()}/{group_id}"),
                               "name": name, "description": description or "", "isArchived": False,
                               "creationDateTime": now, "lastModifiedDateTime": now}
        repo.save_doc(conn, g.kind, group_id, doc, seq=self.store.next_seq(conn, g.kind))
        repo.put_tags(conn, doc["arn"], tags or {})
        return doc

    def _update_group(self, g: GroupKind, group_id: str, name: str | None, description: str | None) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = self._load_active(conn, g, group_id)
            if name is not None:
                self._check_name(conn, g, name, own_id=group_id)
                doc["name"] = name
            if description is not None:
                doc["description"] = description
            doc["lastModifiedDateTime"] = ids.iso(ids.utcnow())
            self._save_group(conn, g, doc)
            return self._present_in(conn, g, [doc])[0]

    def _delete_group(self, g: GroupKind, group_id: str) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = self._load_group(conn, g, group_id)
            members = self._members(conn, g, [group_id])[group_id]
            if members:
                raise self._conflict(g, group_id, f"{g.noun} {group_id} still has {len(members)} "
                                                  f"{self._member_noun(g)}(s); disassociate them first.")
            repo.delete_doc(conn, g.kind, group_id)
            repo.remove_tags(conn, doc["arn"])
        return {}

    def _set_archived(self, g: GroupKind, group_id: str, archived: bool) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = self._load_group(conn, g, group_id)
            if bool(doc.get("isArchived")) != archived:
                self._check_quota(conn, g, archived=archived)
                if archived:
                    active = [m for m in self._members(conn, g, [group_id])[group_id] if not m.get("isArchived")]
                    if active:
                        first = active[0].get("sourceServerID") or active[0].get("applicationID")
                        raise self._conflict(g, group_id, f"{g.noun} {group_id} has {len(active)} "
                                                          f"{self._member_noun(g)}(s) not archived (such as {first}); "
                                                          "archive them first.")
                doc["isArchived"] = archived
                doc["lastModifiedDateTime"] = ids.iso(ids.utcnow())
                self._save_group(conn, g, doc)
            return self._present_in(conn, g, [doc])[0]

    def _list_groups(self, g: GroupKind, filters: dict[str, Any] | None, max_results: int | None,
                     token: str | None) -> dict[str, Any]:
        filters = filters or {}
        limit = max_results or 1000
        after = repo.decode_token(token)
        wanted_ids = filters.get(g.id_key + "s")
        wave_ids = filters.get("waveIDs") if g is APPLICATION else None
        with self.store.read() as conn:
            rows = query_docs(conn, g.kind, ids=wanted_ids or None, parents=wave_ids or None)
            rows = [(seq, doc) for seq, doc in rows
                    if (after is None or seq > after)
                    and (filters.get("isArchived") is None or bool(doc.get("isArchived")) == filters["isArchived"])]
            page = rows[:limit]
            items, changed = self._present(conn, g, [doc for _, doc in page])
        self._persist_status(g, changed)
        out: dict[str, Any] = {"items": items}
        if len(rows) > limit:
            out["nextToken"] = repo.encode_token(page[-1][0])
        return out

    # -- associations ----------------------------------------------------------------------------------

    def _load_members_by_id(self, conn: Connection, g: GroupKind, member_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The documents of the named members-to-be of a ``g`` (servers of an application, applications of a
        wave), loaded for update; ResourceNotFoundException for any that does not exist."""
        if g is APPLICATION:
            return [repo.load_server(conn, sid, for_update=True) for sid in dict.fromkeys(member_ids)]
        return self._load_groups(conn, APPLICATION, member_ids)

    def _save_member(self, conn: Connection, g: GroupKind, member: dict[str, Any]) -> None:
        if g is APPLICATION:
            repo.save_server(conn, member)
        else:
            self._save_group(conn, APPLICATION, member)

    @staticmethod
    def _member_conflict(g: GroupKind, member: dict[str, Any], message: str) -> Conflict:
        key, rtype = ("sourceServerID", "SOURCE_SERVER") if g is APPLICATION else ("applicationID", "APPLICATION")
        return Conflict(message, resource_id=member[key], resource_type=rtype)

    def _associate(self, g: GroupKind, group_id: str, member_ids: Sequence[str]) -> dict[str, Any]:
        """AssociateSourceServers / AssociateApplications: a member belongs to at most one group, an archived
        one joins none; the whole request is refused (ConflictException) if one member cannot join."""
        noun = self._member_noun(g)
        article = "an" if noun[0] in "aeiou" else "a"
        with self.store.transaction() as conn:
            group = self._load_active(conn, g, group_id)
            members = self._load_members_by_id(conn, g, member_ids)
            for member in members:
                member_id = member["sourceServerID"] if g is APPLICATION else member["applicationID"]
                current = member.get(g.id_key)
                if current and current != group_id:
                    raise self._member_conflict(g, member, f"{noun.capitalize()} {member_id} already belongs to "
                                                           f"{g.noun.lower()} {current}; {article} {noun} belongs to "
                                                           f"at most one {g.noun.lower()}.")
                if member.get("isArchived") and current != group_id:
                    raise self._member_conflict(g, member, f"{noun.capitalize()} {member_id} is archived.")
            joining = [member for member in members if member.get(g.id_key) != group_id]
            self._check_capacity(conn, g, group_id, len(joining))
            for member in joining:
                member[g.id_key] = group_id
                self._save_member(conn, g, member)
            self._refresh_with_parent(conn, g, group)
        return {}

    def _disassociate(self, g: GroupKind, group_id: str, member_ids: Sequence[str]) -> dict[str, Any]:
        """DisassociateSourceServers / DisassociateApplications: every member named must be in the group."""
        noun = self._member_noun(g)
        with self.store.transaction() as conn:
            group = self._load_active(conn, g, group_id)
            members = self._load_members_by_id(conn, g, member_ids)
            for member in members:
                if member.get(g.id_key) != group_id:
                    member_id = member["sourceServerID"] if g is APPLICATION else member["applicationID"]
                    raise self._member_conflict(g, member, f"{noun.capitalize()} {member_id} is not associated with "
                                                           f"{g.noun.lower()} {group_id}.")
            for member in members:
                member.pop(g.id_key, None)
                self._save_member(conn, g, member)
            self._refresh_with_parent(conn, g, group)
        return {}

    def _refresh_with_parent(self, conn: Connection, g: GroupKind, group: dict[str, Any]) -> None:
        """Record the new aggregated status of a group whose members changed, and of its wave if it has one."""
        self._refresh(conn, g, [group[g.id_key]])
        if g is APPLICATION and group.get("waveID"):
            self._refresh(conn, WAVE, [group["waveID"]])

    # -- members and aggregated status ----------------------------------------------------------------

    @staticmethod
    def _member_noun(g: GroupKind) -> str:
        return "source server" if g is APPLICATION else "application"

    def _members(self, conn: Connection, g: GroupKind, group_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The member documents of each group: source servers of applications, applications of waves."""
        if g is APPLICATION:
            return servers_of_applications(conn, group_ids)
        out: dict[str, list[dict[str, Any]]] = {group_id: [] for group_id in group_ids}
        for _, app in query_docs(conn, APPLICATION.kind, parents=list(group_ids)):
            out[app["waveID"]].append(app)
        return out

    def _statuses(self, conn: Connection, g: GroupKind, docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The aggregated status of each document (without ``lastUpdateDateTime``)."""
        group_ids = [doc[g.id_key] for doc in docs]
        members = self._members(conn, g, group_ids)
        if g is APPLICATION:
            return {gid: {"healthStatus": rollup.health_status(servers),
                          "progressStatus": rollup.progress_status(servers),
                          "totalSourceServers": len(servers)} for gid, servers in members.items()}
        app_ids = [app["applicationID"] for apps in members.values() for app in apps]
        servers_of = self._members(conn, APPLICATION, app_ids)
        out: dict[str, dict[str, Any]] = {}
        for gid, apps in members.items():
            servers = [s for app in apps for s in servers_of[app["applicationID"]]]
            status = {"healthStatus": rollup.health_status(servers), "progressStatus": rollup.progress_status(servers),
                      "totalApplications": len(apps)}
            started = rollup.replication_started(servers)
            if started:
                status["replicationStartedDateTime"] = started
            out[gid] = status
        return out

    def _present(self, conn: Connection, g: GroupKind,
                 docs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The documents as MGN answers them, and those whose aggregated status changed since last seen
        (their ``_status`` updated, to be saved)."""
        now = ids.iso(ids.utcnow())
        statuses = self._statuses(conn, g, docs)
        items, changed = [], []
        for doc in docs:
            status = statuses[doc[g.id_key]]
            previous = dict(doc.get("_status") or {})
            seen_at = previous.pop("lastUpdateDateTime", None)
            if previous != status or not seen_at:
                seen_at = now
                doc["_status"] = {**status, "lastUpdateDateTime": seen_at}
                changed.append(doc)
            public = {k: v for k, v in doc.items() if not k.startswith("_")}
            public[g.status_key] = {**status, "lastUpdateDateTime": seen_at}
            public["tags"] = repo.get_tags(conn, doc["arn"])
            items.append(public)
        return items, changed

    def _present_in(self, conn: Connection, g: GroupKind, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`_present` inside a write transaction: changed statuses are saved at once."""
        items, changed = self._present(conn, g, docs)
        for doc in changed:
            self._save_group(conn, g, doc)
        return items

    def _persist_status(self, g: GroupKind, changed: list[dict[str, Any]]) -> None:
        """Record statuses a read saw change (only ``_status``: the rest may have changed meanwhile)."""
        if not changed:
            return
        with self.store.transaction() as conn:
            for seen in changed:
                doc = repo.load_doc(conn, g.kind, seen[g.id_key])
                if doc is not None:
                    doc["_status"] = seen["_status"]
                    self._save_group(conn, g, doc)

    def _refresh(self, conn: Connection, g: GroupKind, group_ids: Sequence[str]) -> None:
        """Inside a write: record the new aggregated status of groups whose members just changed."""
        if group_ids:
            self._present_in(conn, g, self._load_groups(conn, g, list(dict.fromkeys(group_ids))))
