"""The EC2-style service: per-server launch templates with versions, security groups, and instances.

Methods named after EC2 operations take the model's member names and return dicts in the operation's
output shape (member names); the EC2 edge (`rehost.api.ec2`) turns them into XML. Errors are
`rehost.launch.errors` classes carrying EC2's codes.

Records live in the control-plane database's generic documents table:
``ec2-launch-template`` (id ``lt-...``), ``ec2-launch-template-version`` (id ``lt-...:N``, parent the
template), ``ec2-security-group`` (``sg-...``) and ``ec2-instance`` (``i-...``, see `rehost.launch.instances`).
Keys starting with ``_`` are rehost's bookkeeping and never reach a client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from rehost import ids
from rehost.db import repo
from rehost.db.store import Store
from rehost.launch import errors as e
from rehost.launch import templates as tpl
from rehost.launch.filters import matches, paginate
from rehost.launch.instances import InstanceOps
from rehost.launch.placement import Targets, single
from rehost.targets.base import TargetDriver

LT, LTV, SG = "ec2-launch-template", "ec2-launch-template-version", "ec2-security-group"


class Ec2Service(InstanceOps):
    """EC2's launch templates and instances over the configured targets (`Targets`; a bare driver becomes
    the only, built-in target). Safe to call from several threads (each call is one database transaction;
    the drivers serialise their own work)."""

    def __init__(self, store: Store, account: Any, targets: Targets | TargetDriver, instances_dir: Path) -> None:
        self.store = store
        self.account = account  # rehost.api.mgn.service.Account: account_id, region
        self.target = targets if isinstance(targets, Targets) else single(store, account.region, targets)
        self.instances_dir = Path(instances_dir)

    def arn(self, resource: str) -> str:
        return f"arn:aws:ec2:{self.account.region}:{self.account.account_id}:{resource}"

    # -- creation (the MGN hook) ------------------------------------------------------------------------

    def create_launch_template_for_server(self, conn: Connection, server_id: str, hostname: str,
                                          instance_type: str = tpl.DEFAULT_INSTANCE_TYPE) -> str:
        """Create a new source server's own template inside the caller's transaction; returns ``lt-...``.

        Version 1 is the default: ``instance_type``, no public IP, a security group of the server's own
        opening TCP 22 and 80, a gp3 boot volume, the hostname as the instance's Name tag.
        """
        now = ids.iso(ids.utcnow())
        sg_id = self._create_security_group(conn, f"rehost-{server_id}", f"Ingress for {server_id}",
                                            tpl.DEFAULT_INGRESS_PORTS)
        lt_id = ids.new_id("lt")
        doc = {"LaunchTemplateId": lt_id, "LaunchTemplateName": f"rehost-{server_id}", "CreateTime": now,
               "CreatedBy": self.arn("root"), "DefaultVersionNumber": 1, "LatestVersionNumber": 1,
               "Tags": [{"Key": "AWSApplicationMigrationServiceSourceServerID", "Value": server_id}],
               "_sourceServerID": server_id, "_defaultSecurityGroup": sg_id}
        repo.save_doc(conn, LT, lt_id, doc, seq=self.store.next_seq(conn, LT))
        data = tpl.default_data(hostname, sg_id, instance_type, self.target.default_subnet_id())
        self._save_version(conn, doc, 1, data, "Created by rehost", now)
        return lt_id

    def _create_security_group(self, conn: Connection, name: str, description: str, ports: Sequence[int]) -> str:
        sg_id = ids.new_id("sg")
        repo.save_doc(conn, SG, sg_id, {
            "GroupId": sg_id, "GroupName": name, "Description": description, "OwnerId": self.account.account_id,
            "VpcId": "vpc-0rehost0000000001", "IpPermissions": tpl.ingress_rules(ports),
            "IpPermissionsEgress": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
        }, seq=self.store.next_seq(conn, SG))
        return sg_id

    def _save_version(self, conn: Connection, lt: dict[str, Any], number: int, data: dict[str, Any],
                      description: str | None, now: str | None) -> dict[str, Any]:
        version = {"LaunchTemplateId": lt["LaunchTemplateId"], "LaunchTemplateName": lt["LaunchTemplateName"],
                   "VersionNumber": number, "CreateTime": now, "CreatedBy": lt["CreatedBy"],
                   "LaunchTemplateData": data}
        if description:
            version["VersionDescription"] = description
        repo.save_doc(conn, LTV, f"{lt['LaunchTemplateId']}:{number}", version, seq=self.store.next_seq(conn, LTV),
                      parent=lt["LaunchTemplateId"])
        return version

    def delete_server_documents(self, server_id: str) -> list[str]:
        """A deleted source server's EC2 records go with it: its launch template, the template's versions
        and the security groups no other template uses, and its terminated instances (documents and
        target directories). Instances still running or stopped are kept, as EC2 keeps them when MGN
        forgets a server; they go once terminated and past the retention window. Returns the IDs removed."""
        removed: list[str] = []
        with self.store.transaction() as conn:
            mine = [lt for lt in repo.list_docs(conn, LT) if lt.get("_sourceServerID") == server_id]
            groups: set[str] = set()
            for lt in mine:
                groups.add(lt.get("_defaultSecurityGroup", ""))
                for version in repo.list_docs(conn, LTV, parent=lt["LaunchTemplateId"]):
                    groups.update(tpl.security_groups(version["LaunchTemplateData"]))
                    repo.delete_doc(conn, LTV, f"{lt['LaunchTemplateId']}:{version['VersionNumber']}")
                repo.delete_doc(conn, LT, lt["LaunchTemplateId"])
                removed.append(lt["LaunchTemplateId"])
            for lt in repo.list_docs(conn, LT):  # the templates that remain keep the groups they use
                groups.discard(lt.get("_defaultSecurityGroup", ""))
                for version in repo.list_docs(conn, LTV, parent=lt["LaunchTemplateId"]):
                    groups.difference_update(tpl.security_groups(version["LaunchTemplateData"]))
            for sg_id in sorted(groups - {""}):
                repo.delete_doc(conn, SG, sg_id)
                removed.append(sg_id)
        return removed + self.prune_terminated(0, source_server_id=server_id)

    # -- lookups --------------------------------------------------------------------------------------

    def _template(self, conn: Connection, template_id: str | None, name: str | None = None) -> dict[str, Any]:
        if template_id:
            if not tpl.TEMPLATE_ID.match(template_id):
                raise e.template_malformed(template_id)
            doc = repo.load_doc(conn, LT, template_id)
            if doc is None:
                raise e.template_not_found(template_id)
            return doc
        if name:
            found = [d for d in repo.list_docs(conn, LT) if d["LaunchTemplateName"] == name]
            if not found:
                raise e.template_name_not_found(name)
            return found[0]
        raise e.missing("LaunchTemplateId")

    def _version(self, conn: Connection, lt: dict[str, Any], version: str | int | None) -> dict[str, Any]:
        """Version ``version`` ("$Default", "$Latest" or a number) of ``lt``."""
        if version in (None, "$Default"):
            number = int(lt["DefaultVersionNumber"])
        elif version == "$Latest":
            number = int(lt["LatestVersionNumber"])
        else:
            try:
                number = int(version)
            except ValueError:
                raise e.invalid_value("LaunchTemplateVersion", version) from None
        doc = repo.load_doc(conn, LTV, f"{lt['LaunchTemplateId']}:{number}")
        if doc is None:
            raise e.version_not_found(lt["LaunchTemplateId"], str(version))
        return doc

    def _ports_of_groups(self, conn: Connection, groups: Sequence[str]) -> dict[str, tuple[int, ...]]:
        out = {}
        for sg_id in groups:
            doc = repo.load_doc(conn, SG, sg_id)
            if doc is not None:
                out[sg_id] = tpl.rule_ports(doc.get("IpPermissions", []))
        return out

    def launch_settings(self, template_id: str, version: str | int | None = None) -> tpl.LaunchSettings:
        """What a launch from ``template_id``'s default (or given) version uses: type, public IP, ports, ..."""
        with self.store.read() as conn:
            lt = self._template(conn, template_id)
            data = self._version(conn, lt, version)["LaunchTemplateData"]
            groups = list(tpl.security_groups(data)) + [lt.get("_defaultSecurityGroup", "")]
            return tpl.settings(data, self._ports_of_groups(conn, groups), lt.get("_defaultSecurityGroup"))

    def default_version_data(self, template_id: str) -> dict[str, Any]:
        """The LaunchTemplateData of ``template_id``'s default version."""
        with self.store.read() as conn:
            return dict(self._version(conn, self._template(conn, template_id), None)["LaunchTemplateData"])

    # -- operations ---------------------------------------------------------------------------------------

    def create_launch_template_version(self, LaunchTemplateData: dict[str, Any], LaunchTemplateId: str | None = None,
                                       LaunchTemplateName: str | None = None, SourceVersion: str | None = None,
                                       VersionDescription: str | None = None, *,
                                       ingress_ports: Sequence[int] | None = None) -> dict[str, Any]:
        """A new version: ``LaunchTemplateData`` over ``SourceVersion``'s data (top-level members replace).

        ``ingress_ports`` (rehost's own, not on EC2's wire) gives the version a new security group opening
        exactly those TCP ports, for the console's "ingress ports" field.
        """
        with self.store.transaction() as conn:
            lt = self._template(conn, LaunchTemplateId, LaunchTemplateName)
            source = self._version(conn, lt, SourceVersion)["LaunchTemplateData"] if SourceVersion else None
            data = tpl.merge(source, LaunchTemplateData)
            tpl.validate(data)
            self.target.resolve(*tpl.placement(data))  # an unknown subnet or zone: EC2's error, nothing stored
            if ingress_ports is not None:
                sg_id = self._create_security_group(conn, f"{lt['LaunchTemplateName']}-v{lt['LatestVersionNumber'] + 1}",
                                                    "Ingress ports set in the rehost console", ingress_ports)
                nics = data.setdefault("NetworkInterfaces", [{"DeviceIndex": 0}])
                primary = next((n for n in nics if n.get("DeviceIndex", 0) == 0), None)
                if primary is None:
                    primary = {"DeviceIndex": 0}
                    nics.insert(0, primary)
                primary["Groups"] = [sg_id]
            for sg_id in tpl.security_groups(data):
                if repo.load_doc(conn, SG, sg_id) is None:
                    raise e.Ec2NotFound("InvalidGroup.NotFound", f"The security group '{sg_id}' does not exist",
                                        sg_id, "security-group")
            lt["LatestVersionNumber"] = int(lt["LatestVersionNumber"]) + 1
            repo.save_doc(conn, LT, lt["LaunchTemplateId"], lt, seq=0)
            version = self._save_version(conn, lt, lt["LatestVersionNumber"], data, VersionDescription,
                                         ids.iso(ids.utcnow()))
        return {"LaunchTemplateVersion": {**version, "DefaultVersion": False}}

    def modify_launch_template(self, LaunchTemplateId: str | None = None, LaunchTemplateName: str | None = None,
                               DefaultVersion: str | None = None) -> dict[str, Any]:
        """Make version ``DefaultVersion`` (a number) the template's default."""
        with self.store.transaction() as conn:
            lt = self._template(conn, LaunchTemplateId, LaunchTemplateName)
            if DefaultVersion is not None:
                if not DefaultVersion.isdigit():
                    raise e.invalid_value("SetDefaultVersion", DefaultVersion)
                version = self._version(conn, lt, DefaultVersion)
                lt["DefaultVersionNumber"] = int(version["VersionNumber"])
                repo.save_doc(conn, LT, lt["LaunchTemplateId"], lt, seq=0)
        return {"LaunchTemplate": _public(lt)}

    def describe_launch_templates(self, LaunchTemplateIds: list[str] | None = None,
                                  LaunchTemplateNames: list[str] | None = None, Filters: list[dict[str, Any]] | None = None,
                                  MaxResults: int | None = None, NextToken: str | None = None) -> dict[str, Any]:
        with self.store.read() as conn:
            if LaunchTemplateIds or LaunchTemplateNames:
                docs = [self._template(conn, i) for i in LaunchTemplateIds or []]
                docs += [self._template(conn, None, n) for n in LaunchTemplateNames or []]
            else:
                docs = repo.list_docs(conn, LT)
        docs = [d for d in docs if matches(d, Filters, {
            "launch-template-name": lambda d: [d["LaunchTemplateName"]],
            "launch-template-id": lambda d: [d["LaunchTemplateId"]]})]
        page, token = paginate(docs, MaxResults, NextToken)
        return {"LaunchTemplates": [_public(d) for d in page], "NextToken": token}

    def describe_launch_template_versions(self, LaunchTemplateId: str | None = None,
                                          LaunchTemplateName: str | None = None, Versions: list[str] | None = None,
                                          MinVersion: str | None = None, MaxVersion: str | None = None,
                                          Filters: list[dict[str, Any]] | None = None, MaxResults: int | None = None,
                                          NextToken: str | None = None) -> dict[str, Any]:
        """Versions of one template (all, or ``Versions``: numbers, "$Latest", "$Default"); without a
        template, ``Versions`` of only "$Latest"/"$Default" describes those of every template, as EC2 does."""
        with self.store.read() as conn:
            if LaunchTemplateId or LaunchTemplateName:
                lts = [self._template(conn, LaunchTemplateId, LaunchTemplateName)]
            elif Versions and all(v in ("$Latest", "$Default") for v in Versions):
                lts = repo.list_docs(conn, LT)
            else:
                raise e.missing("LaunchTemplateId")
            out: list[dict[str, Any]] = []
            for lt in lts:
                if Versions:
                    found = [self._version(conn, lt, v) for v in Versions]
                    found = list({v["VersionNumber"]: v for v in found}.values())
                else:
                    found = repo.list_docs(conn, LTV, parent=lt["LaunchTemplateId"])
                    low = int(MinVersion) if MinVersion and MinVersion.isdigit() else 0
                    high = int(MaxVersion) if MaxVersion and MaxVersion.isdigit() else 1 << 62
                    found = [v for v in found if low <= int(v["VersionNumber"]) <= high]
                    found.sort(key=lambda v: -int(v["VersionNumber"]))  # newest first, as EC2 lists them
                default = int(lt["DefaultVersionNumber"])
                out += [{**v, "DefaultVersion": int(v["VersionNumber"]) == default} for v in found]
        out = [v for v in out if matches(v, Filters, {
            "instance-type": lambda v: [v["LaunchTemplateData"].get("InstanceType", "")],
            "is-default-version": lambda v: ["true" if v["DefaultVersion"] else "false"]})]
        page, token = paginate(out, MaxResults, NextToken)
        return {"LaunchTemplateVersions": page, "NextToken": token}

    def describe_security_groups(self, GroupIds: list[str] | None = None, Filters: list[dict[str, Any]] | None = None,
                                 MaxResults: int | None = None, NextToken: str | None = None) -> dict[str, Any]:
        """The security groups holding the launch templates' ingress rules."""
        with self.store.read() as conn:
            docs = repo.list_docs(conn, SG)
        if GroupIds:
            known = {d["GroupId"] for d in docs}
            for gid in GroupIds:
                if gid not in known:
                    raise e.Ec2NotFound("InvalidGroup.NotFound", f"The security group '{gid}' does not exist",
                                        gid, "security-group")
            docs = [d for d in docs if d["GroupId"] in GroupIds]
        docs = [d for d in docs if matches(d, Filters, {"group-id": lambda d: [d["GroupId"]],
                                                         "group-name": lambda d: [d["GroupName"]]})]
        page, token = paginate(docs, MaxResults, NextToken)
        return {"SecurityGroups": page, "NextToken": token}


# -- helpers --------------------------------------------------------------------------------------------

def _public(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}
