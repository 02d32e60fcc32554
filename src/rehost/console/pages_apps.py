"""Applications and Waves: their lists, create, archive/unarchive/delete, a group's page with its members
(associate, disassociate) and the Test and cutover actions MGN's console offers on a group's servers.

An application groups source servers, a wave groups applications; the two pages differ only in words and
operations (`Group`). A group action runs a server action of `rehost.console.actions` on every server of
the group whose lifecycle it applies to; MGN's console excludes the others, and so does this one (saying
which). Everything goes through `Ctx.call`, so IAM and the API's rules decide, and their refusals show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from rehost.console import actions as act
from rehost.console import present
from rehost.console.core import Ctx, Refused

PROGRESS = {"NOT_STARTED": ("Not started", "neutral"), "IN_PROGRESS": ("In progress", "progress"),
            "COMPLETED": ("Completed", "success")}
HEALTH = {"HEALTHY": ("Healthy", "success"), "LAGGING": ("Lagging", "warning"), "ERROR": ("Error", "error")}
#: The server actions a group offers: MGN's Test and cutover menu.
GROUP_ACTIONS = tuple(a for a in act.ACTIONS if a.menu == "test")
#: What the list pages do to the selected groups: (label, operation prefix, confirmation).
LIST_ACTIONS = {
    "archive": ("Archive", "Archive", "They are hidden from the default list and refuse changes until unarchived."),
    "unarchive": ("Unarchive", "Unarchive", "They return to the active list."),
    "delete": ("Delete", "Delete", "Their records are removed. Only groups without members can be deleted."),
}


@dataclass(frozen=True)
class Group:
    noun: str         # "Application" / "Wave"
    path: str         # "/applications" / "/waves"
    id_key: str       # "applicationID" / "waveID"
    status_key: str   # the aggregated status member
    member: str       # "source server" / "application"
    associate: str    # the operations adding and removing members
    disassociate: str
    member_ids: str   # their list member: "sourceServerIDs" / "applicationIDs"

    @property
    def plural(self) -> str:
        return self.noun.lower() + "s"


APPLICATION = Group("Application", "/applications", "applicationID", "applicationAggregatedStatus", "source server",
                    "AssociateSourceServers", "DisassociateSourceServers", "sourceServerIDs")
WAVE = Group("Wave", "/waves", "waveID", "waveAggregatedStatus", "application", "AssociateApplications",
             "DisassociateApplications", "applicationIDs")


def _row(g: Group, item: dict[str, Any]) -> dict[str, Any]:
    status = item.get(g.status_key) or {}
    progress = PROGRESS.get(status.get("progressStatus", ""), ("—", "neutral"))
    health = HEALTH.get(status.get("healthStatus", ""), ("—", "neutral"))
    return {"id": item[g.id_key], "arn": item["arn"], "name": item["name"], "description": item.get("description", ""),
            "archived": bool(item.get("isArchived")), "wave": item.get("waveID", ""),
            "members": status.get("totalSourceServers", status.get("totalApplications", 0)),
            "progress": progress[0], "progress_tone": progress[1], "health": health[0], "health_tone": health[1],
            "updated": present.when(status.get("lastUpdateDateTime")),
            "started": present.when(status["replicationStartedDateTime"]) if status.get("replicationStartedDateTime")
            else "—", "created": present.when(item.get("creationDateTime"))}


def _one(ctx: Ctx, g: Group, group_id: str) -> dict[str, Any]:
    items = ctx.call(f"List{g.noun}s", filters={g.id_key + "s": [group_id]})["items"]
    if not items:
        raise Refused("ResourceNotFoundException", f"{g.noun} {group_id} not found.")
    return dict(items[0])


def _servers_of(ctx: Ctx, g: Group, group_id: str, members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The source servers of a group: an application's own, or those of a wave's applications."""
    app_ids = [group_id] if g is APPLICATION else [m["applicationID"] for m in members]
    if not app_ids:
        return []
    return list(ctx.call("DescribeSourceServers", filters={"applicationIDs": app_ids})["items"])


def _members(ctx: Ctx, g: Group, group_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A group's members and the candidates that could join it (active, in no other group)."""
    if g is APPLICATION:
        servers = ctx.call("DescribeSourceServers", filters={"isArchived": False})["items"]
        rows = [dict(present.server_row(s), group=s.get("applicationID", "")) for s in servers]
        members = [dict(present.server_row(s)) for s in _servers_of(ctx, g, group_id, [])]
        return members, [r for r in rows if not r["group"]]
    apps = ctx.call("ListApplications", filters={"isArchived": False})["items"]
    members = [_row(APPLICATION, a) for a in ctx.call("ListApplications", filters={"waveIDs": [group_id]})["items"]]
    return members, [_row(APPLICATION, a) for a in apps if not a.get("waveID")]


def _back(ctx: Ctx, default: str) -> str:
    back = str(ctx.form.get("back") or default) if ctx.form else default
    return back if back.startswith("/") and not back.startswith("//") else default


# -- the list ---------------------------------------------------------------------------------------------

def group_list(ctx: Ctx, g: Group) -> Response:
    if not ctx.cp.mgn.is_initialized():
        return ctx.redirect("/getting-started")
    archived = ctx.request.query_params.get("archived") == "1"
    items = ctx.call(f"List{g.noun}s", filters={"isArchived": archived})["items"]
    return ctx.render("groups.html", nav=g.plural, g=g, rows=[_row(g, i) for i in items], archived=archived,
                      list_actions=LIST_ACTIONS, back=g.path + ("?archived=1" if archived else ""))


def group_create(ctx: Ctx, g: Group) -> Response:
    assert ctx.form is not None
    params: dict[str, Any] = {"name": str(ctx.form.get("name") or "").strip()}
    description = str(ctx.form.get("description") or "").strip()
    if description:
        params["description"] = description
    created = ctx.call(f"Create{g.noun}", **params)
    ctx.flash("success", f"{g.noun} {created['name']} created.")
    return ctx.redirect(f"{g.path}/{created[g.id_key]}")


def group_list_action(ctx: Ctx, g: Group) -> Response:
    """Archive, unarchive or delete the selected groups (after a confirmation)."""
    assert ctx.form is not None
    key = str(ctx.form.get("action") or "")
    if key not in LIST_ACTIONS:
        raise Refused("ValidationException", "Unknown action.")
    label, prefix, confirm = LIST_ACTIONS[key]
    group_ids = [str(v) for v in ctx.form.getlist("ids")]
    back = _back(ctx, g.path)
    if not group_ids:
        raise Refused("ValidationException", f"Select at least one {g.noun.lower()}.")
    if ctx.form.get("confirmed") != "1":
        return ctx.render("group_confirm.html", nav=g.plural, title=f"{label} {g.plural}", text=confirm,
                          action=key, items=group_ids, field="ids", post=f"{g.path}/action", back=back)
    done = 0
    for group_id in group_ids:
        try:
            ctx.call(f"{prefix}{g.noun}", **{g.id_key: group_id})
            done += 1
        except Refused as exc:
            ctx.flash("error", exc.message)
    if done:
        ctx.flash("success", f"{label}: done for {done} {g.noun.lower() if done == 1 else g.plural}.")
    return ctx.redirect(back)


# -- one group --------------------------------------------------------------------------------------------

def group_detail(ctx: Ctx, g: Group) -> Response:
    group_id = ctx.request.path_params["group_id"]
    item = _one(ctx, g, group_id)
    members, candidates = _members(ctx, g, group_id)
    servers = members if g is APPLICATION else [
        present.server_row(s) for s in _servers_of(ctx, g, group_id, [{"applicationID": m["id"]} for m in members])]
    arn = item["arn"]
    return ctx.render("group.html", nav=g.plural, g=g, row=_row(g, item), members=members, candidates=candidates,
                      servers=servers, tags=item.get("tags") or {},
                      can_update=ctx.can(f"mgn:Update{g.noun}", arn), can_associate=ctx.can(f"mgn:{g.associate}", arn),
                      can_disassociate=ctx.can(f"mgn:{g.disassociate}", arn),
                      actions=[a for a in GROUP_ACTIONS if ctx.can(f"mgn:{a.operation}", ctx.server_arn())],
                      back=f"{g.path}/{group_id}")


def group_update(ctx: Ctx, g: Group) -> Response:
    """Edit the group's name and description."""
    assert ctx.form is not None
    group_id = ctx.request.path_params["group_id"]
    ctx.call(f"Update{g.noun}", **{g.id_key: group_id, "name": str(ctx.form.get("name") or "").strip(),
                                   "description": str(ctx.form.get("description") or "").strip()})
    ctx.flash("success", f"{g.noun} saved.")
    return ctx.redirect(f"{g.path}/{group_id}")


def group_members(ctx: Ctx, g: Group) -> Response:
    """Associate the chosen candidates with the group, or disassociate the chosen members."""
    assert ctx.form is not None
    group_id = ctx.request.path_params["group_id"]
    op = g.associate if ctx.form.get("op") == "associate" else g.disassociate
    member_ids = [str(v) for v in ctx.form.getlist("ids")]
    if not member_ids:
        raise Refused("ValidationException", f"Select at least one {g.member}.")
    ctx.call(op, **{g.id_key: group_id, g.member_ids: member_ids})
    verb = "associated with" if op == g.associate else "disassociated from"
    ctx.flash("success", f"{len(member_ids)} {g.member}(s) {verb} the {g.noun.lower()}.")
    return ctx.redirect(f"{g.path}/{group_id}")


def group_servers_action(ctx: Ctx, g: Group) -> Response:
    """A Test and cutover action on every server of the group in a lifecycle state it applies to."""
    assert ctx.form is not None
    group_id = ctx.request.path_params["group_id"]
    action = next((a for a in GROUP_ACTIONS if a.key == ctx.form.get("action")), None)
    if action is None:
        raise Refused("ValidationException", "Unknown action.")
    members = ctx.call("ListApplications", filters={"waveIDs": [group_id]})["items"] if g is WAVE else []
    servers = _servers_of(ctx, g, group_id, members)
    eligible = [s["sourceServerID"] for s in servers
                if s["lifeCycle"]["state"] in action.states and not s.get("isArchived")]
    skipped = len(servers) - len(eligible)
    back = f"{g.path}/{group_id}"
    if not eligible:
        raise Refused("ConflictException", f"{action.label}: none of the {len(servers)} source servers of this "
                                           f"{g.noun.lower()} is in a lifecycle state it applies to.")
    if ctx.form.get("confirmed") != "1":
        text = action.confirm + (f" {skipped} server(s) of the {g.noun.lower()} are not in a lifecycle state this "
                                 "applies to and are excluded." if skipped else "")
        return ctx.render("group_confirm.html", nav=g.plural, title=action.label, text=text, action=action.key,
                          items=eligible, field="", post=f"{back}/servers-action", back=back)
    done, failed, job_id = act.run(ctx, action, eligible)
    for message in failed:
        ctx.flash("error", message)
    if skipped:
        ctx.flash("info", f"{skipped} source server(s) excluded: not in a lifecycle state {action.label} applies to.")
    if job_id:
        ctx.flash("success", f"{action.label}: job {job_id} started for {len(done)} server(s).",
                  ("View job details", f"{ctx.base}/jobs/{job_id}"))
    elif done:
        ctx.flash("success", f"{action.label}: done for {len(done)} server(s).")
    return ctx.redirect(back)


def _routes(g: Group) -> list[tuple[str, Any, list[str]]]:
    def bind(handler: Any) -> Any:
        def bound(ctx: Ctx) -> Response:
            return handler(ctx, g)  # type: ignore[no-any-return]
        bound.__name__ = f"{handler.__name__}_{g.plural}"
        return bound

    return [
        (g.path, bind(group_list), ["GET"]),
        (f"{g.path}/create", bind(group_create), ["POST"]),
        (f"{g.path}/action", bind(group_list_action), ["POST"]),
        (f"{g.path}/{{group_id}}", bind(group_detail), ["GET"]),
        (f"{g.path}/{{group_id}}/update", bind(group_update), ["POST"]),
        (f"{g.path}/{{group_id}}/members", bind(group_members), ["POST"]),
        (f"{g.path}/{{group_id}}/servers-action", bind(group_servers_action), ["POST"]),
    ]


ROUTES: list[tuple[str, Any, list[str]]] = _routes(APPLICATION) + _routes(WAVE)
