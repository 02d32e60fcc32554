"""Source servers: the list, Add server, the server's tabs, and the actions of MGN's menus."""

from __future__ import annotations

import shlex
from typing import Any

from starlette.responses import Response

from rehost import errors, instancetypes
from rehost.console import actions as act
from rehost.console import launch_settings, pages_jobs, present
from rehost.console.core import Ctx, Refused, form_number
from rehost.jobs import preflight

LIFECYCLE_FILTERS = ("NOT_READY", "READY_FOR_TEST", "TESTING", "READY_FOR_CUTOVER", "CUTTING_OVER", "CUTOVER",
                     "DISCONNECTED")
TABS = (("dashboard", "Migration dashboard"), ("info", "Server info"), ("launch", "Launch settings"),
        ("replication", "Replication settings"), ("tags", "Tags"))


def servers(ctx: Ctx) -> Response:
    if not ctx.cp.mgn.is_initialized():
        return ctx.redirect("/getting-started")
    q = ctx.request.query_params
    archived = q.get("archived") == "1"
    lifecycle = q.get("lifecycle") or ""
    filters: dict[str, Any] = {"isArchived": archived}
    if lifecycle in LIFECYCLE_FILTERS:
        filters["lifeCycleStates"] = [lifecycle]
    items = ctx.call("DescribeSourceServers", filters=filters)["items"]
    rows = [present.server_row(s) for s in items]
    return ctx.render("servers.html", nav="servers", rows=rows, archived=archived, lifecycle=lifecycle,
                      lifecycles=[(s, present.lifecycle_label(s)) for s in LIFECYCLE_FILTERS],
                      actions=act.visible(ctx), back=str(ctx.request.url.path)[len(ctx.base):]
                      + (f"?{ctx.request.url.query}" if ctx.request.url.query else ""))


def _endpoint(ctx: Ctx) -> str:
    """The control plane's URL as a source server reaches it."""
    s = ctx.cp.settings
    host = s.advertised_replication_host or s.host
    if host in ("0.0.0.0", "::", ""):
        host = ctx.request.url.hostname or "127.0.0.1"
    return f"http://{host}:{s.port}"


def install_command(endpoint: str, region: str, key_id: str, secret: str, session_token: str = "") -> str:
    """The download-and-run commands MGN's "Add server" page builds, for this control plane."""
    name = "rehost-replication-installer-init"
    run = (f"sudo python3 {name} --region {shlex.quote(region)} --aws-access-key-id {shlex.quote(key_id)} "
           f"--aws-secret-access-key {shlex.quote(secret)}")
    if session_token:
        run += f" --aws-session-token {shlex.quote(session_token)}"
    return (f"wget -O ./{name} {endpoint}/installer/linux/{name}\n"
            f"sudo chmod +x {name}; {run} --endpoint {endpoint}")


def add_server(ctx: Ctx) -> Response:
    user_names = [u["UserName"] for u in ctx.cp.iam.list_users()["Users"]] if ctx.can_iam("iam:ListUsers") else []
    return ctx.render("add_server.html", nav="servers", users=user_names, command=None, endpoint=_endpoint(ctx),
                      can_create_key=ctx.can_iam("iam:CreateAccessKey"))


def add_server_build(ctx: Ctx) -> Response:
    """Build the installer command: with a new access key for the chosen user, or with the typed keys."""
    assert ctx.form is not None
    form = {k: str(v).strip() for k, v in ctx.form.items()}
    created = None
    if form.get("mode") == "create":
        user = form.get("user", "")
        ctx.require_iam("iam:CreateAccessKey", ctx.iam_user_arn(user))
        try:
            created = ctx.cp.iam.create_access_key(user)["AccessKey"]
        except errors.RehostError as exc:
            raise Refused.of(exc) from exc
        key_id, secret = created["AccessKeyId"], created["SecretAccessKey"]
    else:
        key_id, secret = form.get("access_key_id", ""), form.get("secret_access_key", "")
        if not key_id or not secret:
            raise Refused("ValidationException", "Enter the access key ID and the secret access key of the agent's user.")
    command = install_command(_endpoint(ctx), ctx.cp.settings.region, key_id, secret)
    user_names = [u["UserName"] for u in ctx.cp.iam.list_users()["Users"]] if ctx.can_iam("iam:ListUsers") else []
    return ctx.render("add_server.html", nav="servers", users=user_names, command=command, created=created,
                      endpoint=_endpoint(ctx), can_create_key=ctx.can_iam("iam:CreateAccessKey"))


def _server(ctx: Ctx, server_id: str) -> dict[str, Any]:
    items = ctx.call("DescribeSourceServers", filters={"sourceServerIDs": [server_id]})["items"]
    if not items:
        raise Refused("ResourceNotFoundException", f"Source server {server_id} not found.")
    return items[0]


def _comparison(server: dict[str, Any], template_type: str | None) -> list[dict[str, Any]]:
    """The seed's table: recommended instance type beside the launch template's, with vCPUs, memory, price."""
    props = server.get("sourceProperties") or {}
    recommended = props.get("recommendedInstanceType") or (
        instancetypes.right_size_source(props).name if props.get("cpus") or props.get("ramBytes") else None)
    rows = []
    for role, name in (("Recommended (right-sizing)", recommended), ("EC2 launch template", template_type)):
        spec = instancetypes.CATALOG.get(name or "")
        rows.append({"role": role, "name": name or "—", "vcpus": spec.vcpus if spec else "—",
                     "memory": f"{spec.memory_gib:g} GiB" if spec else "—",
                     "price": f"USD {spec.hourly_usd:g}" if spec else "—"})
    return rows


def _jobs_of(ctx: Ctx, server_id: str) -> list[dict[str, Any]]:
    jobs = ctx.call("DescribeJobs", maxResults=50)["items"]
    return [pages_jobs.job_row(j) for j in jobs
            if any(p["sourceServerID"] == server_id for p in j.get("participatingServers", []))][:10]


def server_detail(ctx: Ctx) -> Response:
    sid = ctx.request.path_params["server_id"]
    tab = ctx.request.query_params.get("tab", "dashboard")
    if tab not in dict(TABS):
        tab = "dashboard"
    server = _server(ctx, sid)
    values: dict[str, Any] = {
        "nav": "servers", "tab": tab, "tabs": TABS, "server": server, "row": present.server_row(server),
        "actions": act.visible(ctx, sid), "back": f"/servers/{sid}?tab={tab}",
        "timeline": present.timeline(server), "props": server.get("sourceProperties") or {},
    }
    if tab == "dashboard":
        launched = server.get("launchedInstance") or {}
        values["launched"] = launched
        values["address"] = launch_settings.instance_address(ctx, launched.get("ec2InstanceID"))
        values["jobs"] = _jobs_of(ctx, sid)
    elif tab == "info":
        lt = launch_settings.template_view(ctx, server)
        values["comparison"] = _comparison(server, lt.get("instance_type"))
        values["ram"] = present.human_bytes((server.get("sourceProperties") or {}).get("ramBytes"))
        values["preflight"] = preflight.load(ctx.cp.store, sid)
    elif tab == "launch":
        values["config"] = ctx.call("GetLaunchConfiguration", sourceServerID=sid)
        values["lt"] = launch_settings.template_view(ctx, server)
        values["instance_types"] = sorted(instancetypes.CATALOG)
        values["can_edit_launch"] = ctx.can("mgn:UpdateLaunchConfiguration", ctx.server_arn(sid))
    elif tab == "replication":
        values["config"] = ctx.call("GetReplicationConfiguration", sourceServerID=sid)
        values["can_edit_replication"] = ctx.can("mgn:UpdateReplicationConfiguration", ctx.server_arn(sid))
    elif tab == "tags":
        values["tags"] = ctx.call("ListTagsForResource", resourceArn=server["arn"])["tags"]
        values["can_tag"] = ctx.can("mgn:TagResource", server["arn"])
        values["can_untag"] = ctx.can("mgn:UntagResource", server["arn"])
    return ctx.render("server.html", **values)


def server_action(ctx: Ctx) -> Response:
    """One of the menus' actions on the selected servers, after the confirmation the dialog (or page) asked."""
    assert ctx.form is not None
    action = act.BY_KEY.get(str(ctx.form.get("action") or ""))
    if action is None:
        raise Refused("ValidationException", "Unknown action.")
    server_ids = [str(v) for v in ctx.form.getlist("sourceServerIDs")]
    back = str(ctx.form.get("back") or "/servers")
    if ctx.form.get("confirmed") != "1":
        # Without script the dialog cannot open: ask on a page instead, with the same words.
        return ctx.render("confirm.html", nav="servers", action=action, server_ids=server_ids, back=back)
    done, failed, job_id = act.run(ctx, action, server_ids)
    for message in failed:
        ctx.flash("error", message)
    if done:
        noun = "server" if len(done) == 1 else "servers"
        if job_id:
            ctx.flash("success", f"{action.label}: job {job_id} started for {len(done)} {noun}.",
                      ("View job details", f"{ctx.base}/jobs/{job_id}"))
        else:
            ctx.flash("success", f"{action.label}: done for {len(done)} {noun}.")
    if action.key == "delete" and done and back.startswith("/servers/"):
        back = "/servers?archived=1"
    return ctx.redirect(back if back.startswith("/") and not back.startswith("//") else "/servers")


def tags_save(ctx: Ctx) -> Response:
    assert ctx.form is not None
    sid = ctx.request.path_params["server_id"]
    arn = ctx.server_arn(sid)
    remove = str(ctx.form.get("remove") or "")
    if remove:
        ctx.call("UntagResource", resourceArn=arn, tagKeys=[remove])
        ctx.flash("success", f"Tag {remove} removed.")
    else:
        key, value = str(ctx.form.get("key") or "").strip(), str(ctx.form.get("value") or "").strip()
        if not key:
            raise Refused("ValidationException", "A tag needs a key.")
        ctx.call("TagResource", resourceArn=arn, tags={key: value})
        ctx.flash("success", f"Tag {key} saved.")
    return ctx.redirect(f"/servers/{sid}?tab=tags")


def replication_save(ctx: Ctx) -> Response:
    assert ctx.form is not None
    sid = ctx.request.path_params["server_id"]
    form = {k: str(v) for k, v in ctx.form.items()}
    config = ctx.call("GetReplicationConfiguration", sourceServerID=sid)
    disks = [dict(d, stagingDiskType=form.get(f"disk:{d['deviceName']}", d.get("stagingDiskType", "AUTO")))
             for d in config.get("replicatedDisks", [])]
    ctx.call("UpdateReplicationConfiguration", sourceServerID=sid,
             replicationServerInstanceType=form.get("replicationServerInstanceType") or config["replicationServerInstanceType"],
             useDedicatedReplicationServer=form.get("useDedicatedReplicationServer") == "on",
             createPublicIP=form.get("createPublicIP") == "on",
             bandwidthThrottling=form_number(form.get("bandwidthThrottling")), replicatedDisks=disks)
    ctx.flash("success", "Replication settings saved.")
    return ctx.redirect(f"/servers/{sid}?tab=replication")


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/servers", servers, ["GET"]),
    ("/servers/add", add_server, ["GET"]),
    ("/servers/add", add_server_build, ["POST"]),
    ("/servers/action", server_action, ["POST"]),
    ("/servers/{server_id}", server_detail, ["GET"]),
    ("/servers/{server_id}/tags", tags_save, ["POST"]),
    ("/servers/{server_id}/replication", replication_save, ["POST"]),
    *launch_settings.ROUTES,
]
