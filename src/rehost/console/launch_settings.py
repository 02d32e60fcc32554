"""Launch settings of a server: general launch settings (right-sizing) and its EC2 launch template.

The EC2 launch template lives in ``cp.ec2`` (the EC2 subset, EC2's own member names: ``LaunchTemplateId``,
``LaunchTemplateData``, ``DefaultVersion``). While a control plane has no ``ec2`` part, the console says
so instead of pretending; every call is authorized as the EC2 API would (``ec2:<Operation>``).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from rehost import errors, instancetypes
from rehost.api.core.errors import AwsError
from rehost.console.core import Ctx, Refused


def _versions(ctx: Ctx, template_id: str) -> list[dict[str, Any]]:
    out = ctx.ec2_call("DescribeLaunchTemplateVersions", LaunchTemplateId=template_id)
    versions = out.get("LaunchTemplateVersions", []) if isinstance(out, dict) else list(out)
    rows = []
    for v in sorted(versions, key=lambda v: int(v.get("VersionNumber", 0)), reverse=True):
        data = v.get("LaunchTemplateData") or {}
        nics = data.get("NetworkInterfaces") or []
        public = any(n.get("AssociatePublicIpAddress") for n in nics)
        rows.append({"number": v.get("VersionNumber"), "default": bool(v.get("DefaultVersion")),
                     "instance_type": data.get("InstanceType") or "—", "public_ip": public,
                     "description": v.get("VersionDescription") or "", "created": v.get("CreateTime") or ""})
    return rows


def template_view(ctx: Ctx, server: dict[str, Any]) -> dict[str, Any]:
    """The server's EC2 launch template: ID, versions, the default version's instance type (or why not)."""
    config = server.get("_launchConfiguration") or {}
    template_id = config.get("ec2LaunchTemplateID") or ""
    view: dict[str, Any] = {"id": template_id, "available": getattr(ctx.cp, "ec2", None) is not None,
                            "versions": [], "instance_type": None, "error": None,
                            "can_create": False, "can_modify": False}
    if not view["available"] or not template_id:
        return view
    try:
        view["versions"] = _versions(ctx, template_id)
    except Refused as exc:
        view["error"] = exc.message
        return view
    default = next((v for v in view["versions"] if v["default"]), None)
    view["instance_type"] = default["instance_type"] if default and default["instance_type"] != "—" else None
    view["can_create"] = ctx.can_ec2("CreateLaunchTemplateVersion", LaunchTemplateId=template_id)
    view["can_modify"] = ctx.can_ec2("ModifyLaunchTemplate", LaunchTemplateId=template_id)
    return view


def instance_address(ctx: Ctx, instance_id: str | None) -> str | None:
    """``host[:port]`` where the launched instance's web port (80) answers, when the EC2 part knows it.

    Targets on this host publish guest ports on host ports (QEMU user networking), so the address is the
    instance's public IP with the host port that forwards to its port 80.
    """
    ec2 = getattr(ctx.cp, "ec2", None)
    if not instance_id or ec2 is None or not ctx.can_ec2("DescribeInstances", InstanceIds=[instance_id]):
        return None
    try:
        inst = ec2.describe_instance(instance_id)
    except (errors.RehostError, AwsError):
        return None
    ip = inst.get("PublicIpAddress") or inst.get("PrivateIpAddress")
    if not ip or (inst.get("State") or {}).get("Name") not in ("pending", "running"):
        return None
    ports = {int(k): int(v) for k, v in (inst.get("_ports") or {}).items()}
    port = ports.get(80, 80)
    return str(ip) if port == 80 else f"{ip}:{port}"


def launch_configuration_save(ctx: Ctx) -> Response:
    """General launch settings: right-sizing on (BASIC) or off (NONE), and the other switches."""
    assert ctx.form is not None
    sid = ctx.request.path_params["server_id"]
    form = {k: str(v) for k, v in ctx.form.items()}
    ctx.call("UpdateLaunchConfiguration", sourceServerID=sid,
             targetInstanceTypeRightSizingMethod="BASIC" if form.get("rightSizing") == "on" else "NONE",
             launchDisposition="STARTED" if form.get("launchDisposition") == "on" else "STOPPED",
             copyPrivateIp=form.get("copyPrivateIp") == "on", copyTags=form.get("copyTags") == "on",
             bootMode=form.get("bootMode") if form.get("bootMode") in ("LEGACY_BIOS", "UEFI", "USE_SOURCE") else "USE_SOURCE",
             licensing={"osByol": form.get("osByol") == "on"})
    ctx.flash("success", "General launch settings saved.")
    return ctx.redirect(f"/servers/{sid}?tab=launch")


def _template_id(ctx: Ctx, sid: str) -> str:
    config = ctx.call("GetLaunchConfiguration", sourceServerID=sid)
    template_id = config.get("ec2LaunchTemplateID")
    if not template_id:
        raise Refused("ResourceNotFoundException", f"Source server {sid} has no EC2 launch template.")
    return str(template_id)


def version_create(ctx: Ctx) -> Response:
    """Step 5: a new template version with the chosen instance type and public IP, optionally the default."""
    assert ctx.form is not None
    sid = ctx.request.path_params["server_id"]
    form = {k: str(v) for k, v in ctx.form.items()}
    instance_type = form.get("instanceType", "")
    if instance_type not in instancetypes.CATALOG:
        raise Refused("InvalidParameterValue", f"Invalid value '{instance_type}' for InstanceType.")
    template_id = _template_id(ctx, sid)
    versions = _versions(ctx, template_id)
    source = next((v["number"] for v in versions if v["default"]), None)
    params: dict[str, Any] = {
        "LaunchTemplateId": template_id,
        "VersionDescription": form.get("description") or f"{instance_type} from the rehost console",
        "LaunchTemplateData": {
            "InstanceType": instance_type,
            "NetworkInterfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": form.get("publicIp") == "on"}],
        },
    }
    if source is not None:
        params["SourceVersion"] = str(source)
    out = ctx.ec2_call("CreateLaunchTemplateVersion", **params)
    number = ((out or {}).get("LaunchTemplateVersion") or {}).get("VersionNumber")
    if form.get("makeDefault") == "on" and number is not None:
        ctx.ec2_call("ModifyLaunchTemplate", LaunchTemplateId=template_id, DefaultVersion=str(number))
        ctx.flash("success", f"Launch template version {number} ({instance_type}) created and set as the default.")
    else:
        ctx.flash("success", f"Launch template version {number} ({instance_type}) created.")
    return ctx.redirect(f"/servers/{sid}?tab=launch")


def version_default(ctx: Ctx) -> Response:
    assert ctx.form is not None
    sid = ctx.request.path_params["server_id"]
    version = str(ctx.form.get("version") or "")
    ctx.ec2_call("ModifyLaunchTemplate", LaunchTemplateId=_template_id(ctx, sid), DefaultVersion=version)
    ctx.flash("success", f"Version {version} is now the launch template's default.")
    return ctx.redirect(f"/servers/{sid}?tab=launch")


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/servers/{server_id}/launch-configuration", launch_configuration_save, ["POST"]),
    ("/servers/{server_id}/launch-template/versions", version_create, ["POST"]),
    ("/servers/{server_id}/launch-template/default", version_default, ["POST"]),
]
