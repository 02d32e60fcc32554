"""Getting started, the replication and launch templates, and IAM users (the hands-on's Steps 1 and 2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from rehost import errors
from rehost.console.core import Ctx, Refused, form_number
from rehost.iam.managed import managed_policy_names

INSTANCE_TYPES = ("t3.micro", "t3.small", "t3.medium", "t3.large", "m5.large", "c5.large", "r5.large")
STAGING_DISK_TYPES = (("GP3", "Lower cost, faster SSD (gp3)"), ("GP2", "SSD (gp2)"), ("ST1", "Throughput optimized HDD (st1)"))


def _form(ctx: Ctx) -> dict[str, str]:
    assert ctx.form is not None
    return {k: str(v) for k, v in ctx.form.items()}


def _tags(text: str) -> dict[str, str]:
    """``key=value`` pairs, one a line, as the template forms take tags."""
    tags: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip():
            key, _, value = line.partition("=")
            if not key.strip():
                raise Refused("ValidationException", f"Tag line {line!r} has no key: write key=value.")
            tags[key.strip()] = value.strip()
    return tags


def getting_started(ctx: Ctx) -> Response:
    return ctx.render("getting_started.html", nav="start", initialized=ctx.cp.mgn.is_initialized())


def initialize(ctx: Ctx) -> Response:
    ctx.call("InitializeService")
    ctx.flash("success", "Application Migration Service is set up: the default replication and launch templates "
                         "were created.")
    return ctx.redirect("/replication-template")


def _replication_template(ctx: Ctx) -> dict[str, Any]:
    items = ctx.call("DescribeReplicationConfigurationTemplates")["items"]
    if not items:
        raise Refused("ResourceNotFoundException", "There is no replication template: set up the service first.")
    return items[0]


def replication_template(ctx: Ctx) -> Response:
    tpl = _replication_template(ctx)
    editing = ctx.request.query_params.get("edit") == "1"
    return ctx.render("replication_template.html", nav="replication", tpl=tpl, editing=editing,
                      instance_types=INSTANCE_TYPES, disk_types=STAGING_DISK_TYPES,
                      can_edit=ctx.can("mgn:UpdateReplicationConfigurationTemplate",
                                       tpl["arn"]))


def replication_template_save(ctx: Ctx) -> Response:
    form = _form(ctx)
    tpl = _replication_template(ctx)
    params: dict[str, Any] = {
        "replicationServerInstanceType": form.get("replicationServerInstanceType") or tpl["replicationServerInstanceType"],
        "defaultLargeStagingDiskType": form.get("defaultLargeStagingDiskType") or tpl["defaultLargeStagingDiskType"],
        "bandwidthThrottling": form_number(form.get("bandwidthThrottling")),
        "useDedicatedReplicationServer": form.get("useDedicatedReplicationServer") == "on",
        "createPublicIP": form.get("createPublicIP") == "on",
        "dataPlaneRouting": "PUBLIC_IP" if form.get("dataPlaneRouting") == "PUBLIC_IP" else "PRIVATE_IP",
        "stagingAreaTags": _tags(form.get("stagingAreaTags", "")),
    }
    template_id = tpl["replicationConfigurationTemplateID"]
    ctx.call("UpdateReplicationConfigurationTemplate", replicationConfigurationTemplateID=template_id, **params)
    ctx.flash("success", "Replication template saved. It applies to servers added from now on.")
    return ctx.redirect("/replication-template")


def _launch_template(ctx: Ctx) -> dict[str, Any]:
    items = ctx.call("DescribeLaunchConfigurationTemplates")["items"]
    if not items:
        raise Refused("ResourceNotFoundException", "There is no launch template: set up the service first.")
    return items[0]


def launch_template(ctx: Ctx) -> Response:
    tpl = _launch_template(ctx)
    return ctx.render("launch_template.html", nav="launch", tpl=tpl, editing=ctx.request.query_params.get("edit") == "1",
                      can_edit=ctx.can("mgn:UpdateLaunchConfigurationTemplate", tpl["arn"]))


def launch_template_save(ctx: Ctx) -> Response:
    form = _form(ctx)
    tpl = _launch_template(ctx)
    ctx.call("UpdateLaunchConfigurationTemplate", launchConfigurationTemplateID=tpl["launchConfigurationTemplateID"],
             targetInstanceTypeRightSizingMethod="BASIC" if form.get("rightSizing") == "on" else "NONE",
             launchDisposition="STARTED" if form.get("launchDisposition") == "on" else "STOPPED",
             copyPrivateIp=form.get("copyPrivateIp") == "on", copyTags=form.get("copyTags") == "on",
             associatePublicIpAddress=form.get("associatePublicIpAddress") == "on",
             bootMode=form.get("bootMode") if form.get("bootMode") in ("LEGACY_BIOS", "UEFI", "USE_SOURCE") else "USE_SOURCE",
             licensing={"osByol": form.get("osByol") == "on"})
    ctx.flash("success", "Launch settings template saved. It applies to servers added from now on.")
    return ctx.redirect("/launch-template")


# -- IAM ------------------------------------------------------------------------------------------------

def _iam(call: Callable[..., dict[str, Any]], *args: str) -> dict[str, Any]:
    """Call the IAM directory, turning its errors (NoSuchEntity, EntityAlreadyExists...) into `Refused`."""
    try:
        return call(*args)
    except errors.RehostError as exc:
        raise Refused.of(exc) from exc


def users(ctx: Ctx) -> Response:
    ctx.require_iam("iam:ListUsers")
    rows = []
    for user in ctx.cp.iam.list_users()["Users"]:
        attached = ctx.cp.iam.list_user_policies(user["UserName"])["AttachedPolicies"]
        keys = ctx.cp.iam.list_access_keys(user["UserName"])["AccessKeyMetadata"]
        rows.append({**user, "policies": [p["PolicyName"] for p in attached], "keys": len(keys)})
    return ctx.render("users.html", nav="iam", users=rows, can_create=ctx.can_iam("iam:CreateUser"))


def user_create(ctx: Ctx) -> Response:
    form = _form(ctx)
    name = form.get("userName", "").strip()
    ctx.require_iam("iam:CreateUser", ctx.iam_user_arn(name or "*"))
    policies = [str(p) for p in ctx.form.getlist("policy")] if ctx.form else []
    if policies:
        ctx.require_iam("iam:AttachUserPolicy", ctx.iam_user_arn(name))
    _iam(ctx.cp.iam.create_user, name)
    for policy in policies:
        _iam(ctx.cp.iam.attach_user_policy, name, policy)
    ctx.flash("success", f"User {name} created.")
    return ctx.redirect(f"/iam/users/{name}")


def user_detail(ctx: Ctx, created_key: dict[str, Any] | None = None) -> Response:
    name = ctx.request.path_params["name"]
    ctx.require_iam("iam:ListUsers")
    user = _iam(ctx.cp.iam.get_user, name)
    policies = _iam(ctx.cp.iam.list_user_policies, name)
    keys = _iam(ctx.cp.iam.list_access_keys, name)["AccessKeyMetadata"]
    attached = [p["PolicyName"] for p in policies["AttachedPolicies"]]
    return ctx.render("user.html", nav="iam", user=user, attached=attached, inline=policies["PolicyNames"],
                      keys=keys, created_key=created_key,
                      available=[p for p in managed_policy_names() if p not in attached],
                      can_attach=ctx.can_iam("iam:AttachUserPolicy", ctx.iam_user_arn(name)),
                      can_create_key=ctx.can_iam("iam:CreateAccessKey", ctx.iam_user_arn(name)))


def user_attach(ctx: Ctx) -> Response:
    name = ctx.request.path_params["name"]
    ctx.require_iam("iam:AttachUserPolicy", ctx.iam_user_arn(name))
    policy = _form(ctx).get("policy", "")
    _iam(ctx.cp.iam.attach_user_policy, name, policy)
    ctx.flash("success", f"Policy {policy} attached to {name}.")
    return ctx.redirect(f"/iam/users/{name}")


def user_create_key(ctx: Ctx) -> Response:
    """Create an access key and show its secret on this response only (it is never shown again)."""
    name = ctx.request.path_params["name"]
    ctx.require_iam("iam:CreateAccessKey", ctx.iam_user_arn(name))
    key = _iam(ctx.cp.iam.create_access_key, name)["AccessKey"]
    return user_detail(ctx, created_key=key)


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/getting-started", getting_started, ["GET"]),
    ("/initialize", initialize, ["POST"]),
    ("/replication-template", replication_template, ["GET"]),
    ("/replication-template", replication_template_save, ["POST"]),
    ("/launch-template", launch_template, ["GET"]),
    ("/launch-template", launch_template_save, ["POST"]),
    ("/iam/users", users, ["GET"]),
    ("/iam/users", user_create, ["POST"]),
    ("/iam/users/{name}", user_detail, ["GET"]),
    ("/iam/users/{name}/policies", user_attach, ["POST"]),
    ("/iam/users/{name}/access-keys", user_create_key, ["POST"]),
]
