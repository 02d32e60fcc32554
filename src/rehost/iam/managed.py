"""The AWS managed policies rehost knows, by name or ARN (``arn:aws:iam::aws:policy/<Name>``).

The action lists follow AWS's documents as mirrored in docs (mgn-reference.md §6, hands-on.md Step 1).
Callers get a fresh copy of a document each time, so they may modify it. Every document here passes
`rehost.iam.policy.validate_policy_document` (the unit tests check it).
"""

from __future__ import annotations

import copy
from typing import Any

from rehost.errors import NotFound

ARN_PREFIX = "arn:aws:iam::aws:policy/"
VERSION = "2012-10-17"
SOURCE_SERVERS = "arn:aws:mgn:*:*:source-server/*"


def _doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": VERSION, "Statement": list(statements)}


def _allow(actions: list[str], resource: str | list[str] = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": actions, "Resource": resource, **extra}


def _prefixed(service: str, names: str) -> list[str]:
    return [f"{service}:{name}" for name in names.split()]


# EC2 Describe* and Get* calls MGN's console makes with the operator's own rights.
_EC2_READ = _prefixed(
    "ec2",
    "DescribeAccountAttributes DescribeAvailabilityZones DescribeImages DescribeInstanceAttribute "
    "DescribeInstanceStatus DescribeInstanceTypeOfferings DescribeInstanceTypes DescribeInstances "
    "DescribeKeyPairs DescribeLaunchTemplateVersions DescribeLaunchTemplates DescribeNetworkInterfaces "
    "DescribePlacementGroups DescribeSecurityGroups DescribeSnapshots DescribeSubnets DescribeTags "
    "DescribeVolumes GetEbsDefaultKmsKeyId GetEbsEncryptionByDefault",
)
# Not in AWS's FullAccess: rehost serves these EC2 calls itself, and an operator needs them for the
# hands-on's Step 5 (edit the launch template, make a version the default), for terminating and
# inspecting launched instances, and (DescribeVpcs) for launch automation that checks a subnet's VPC.
# On AWS the console performs them under the user's own EC2 rights.
_EC2_OPERATOR = _prefixed(
    "ec2", "CreateLaunchTemplateVersion ModifyLaunchTemplate TerminateInstances GetConsoleOutput DescribeVpcs"
)
_SERVICE_ROLES = [
    f"arn:aws:iam::*:role/service-role/{role}"
    for role in (
        "AWSApplicationMigrationReplicationServerRole",
        "AWSApplicationMigrationConversionServerRole",
        "AWSApplicationMigrationMGHRole",
        "AWSApplicationMigrationLaunchInstanceWithDrsRole",
        "AWSApplicationMigrationLaunchInstanceWithSsmRole",
        "AWSApplicationMigrationAgentRole",
    )
]

FULL_ACCESS = _doc(
    _allow(["mgn:*"]),
    _allow(_EC2_READ + _EC2_OPERATOR),
    _allow(
        ["elasticloadbalancing:DescribeLoadBalancers", "iam:ListInstanceProfiles"]
        + _prefixed("kms", "DescribeKey ListAliases")
        + ["license-manager:ListLicenseConfigurations", "servicequotas:GetServiceQuota"]
        + _prefixed(
            "ssm",
            "DescribeDocument DescribeInstanceInformation DescribeParameters GetAutomationExecution "
            "GetCommandInvocation GetDocument GetParameter GetParameters ListCommandInvocations ListCommands "
            "PutParameter SendCommand StartAutomationExecution",
        )
        + _prefixed("drs", "DescribeSourceServers DisconnectSourceServer")
    ),
    _allow(
        ["iam:PassRole"],
        _SERVICE_ROLES,
        Condition={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
    ),
)

READ_ONLY = _doc(
    _allow(
        _prefixed(
            "mgn",
            "DescribeJobLogItems DescribeJobs DescribeSourceServers DescribeReplicationConfigurationTemplates "
            "GetLaunchConfiguration DescribeVcenterClients GetReplicationConfiguration "
            "DescribeLaunchConfigurationTemplates ListSourceServerActions ListTemplateActions ListApplications "
            "ListWaves ListExports ListImports ListImportErrors ListExportErrors",
        )
        + _prefixed(
            "ec2", "DescribeInstances DescribeLaunchTemplateVersions DescribeSecurityGroups DescribeSubnets"
        )
        + ["servicequotas:GetServiceQuota", "ssm:GetParameter"]
    ),
)

# Exactly the hands-on's Step 1 list: the agent's runtime calls on any resource, TagResource on servers only.
AGENT = _doc(
    _allow(
        _prefixed(
            "mgn",
            "SendAgentMetricsForMgn SendAgentLogsForMgn SendClientMetricsForMgn SendClientLogsForMgn "
            "RegisterAgentForMgn UpdateAgentSourcePropertiesForMgn UpdateAgentReplicationInfoForMgn "
            "UpdateAgentConversionInfoForMgn GetAgentInstallationAssetsForMgn GetAgentCommandForMgn "
            "GetAgentConfirmedResumeInfoForMgn GetAgentRuntimeConfigurationForMgn UpdateAgentBacklogForMgn "
            "GetAgentReplicationInfoForMgn",
        )
    ),
    _allow(["mgn:TagResource"], SOURCE_SERVERS),
)

AGENT_INSTALLATION = _doc(
    _allow(
        _prefixed(
            "mgn",
            "GetAgentInstallationAssetsForMgn IssueClientCertificateForMgn RegisterAgentForMgn "
            "SendClientLogsForMgn SendClientMetricsForMgn VerifyClientRoleForMgn",
        )
    ),
    _allow(["mgn:TagResource"], SOURCE_SERVERS),
)

# For an agent after installation: scoped to its own source server through the session's SourceIdentity.
AGENT_V2 = _doc(
    _allow(
        _prefixed(
            "mgn",
            "GetAgentCommandForMgn GetAgentConfirmedResumeInfoForMgn GetAgentReplicationInfoForMgn "
            "GetAgentRuntimeConfigurationForMgn SendAgentLogsForMgn SendAgentMetricsForMgn "
            "UpdateAgentBacklogForMgn UpdateAgentConversionInfoForMgn UpdateAgentReplicationInfoForMgn "
            "UpdateAgentSourcePropertiesForMgn IssueClientCertificateForMgn",
        ),
        "arn:aws:mgn:*:*:source-server/${aws:SourceIdentity}",
    ),
)

_POLICIES: dict[str, dict[str, Any]] = {
    "AWSApplicationMigrationFullAccess": FULL_ACCESS,
    "AWSApplicationMigrationReadOnlyAccess": READ_ONLY,
    "AWSApplicationMigrationAgentPolicy": AGENT,
    "AWSApplicationMigrationAgentInstallationPolicy": AGENT_INSTALLATION,
    "AWSApplicationMigrationAgentPolicy_v2": AGENT_V2,
}

MANAGED_POLICY_ARNS: dict[str, str] = {name: ARN_PREFIX + name for name in _POLICIES}


def managed_policy_names() -> list[str]:
    """The names of every managed policy, sorted."""
    return sorted(_POLICIES)


def managed_policy_name(name_or_arn: str) -> str:
    """The policy name for a name or an ARN (``arn:aws:iam::aws:policy/[path/]Name``); not checked."""
    if name_or_arn.startswith(ARN_PREFIX):
        return name_or_arn[len(ARN_PREFIX) :].rsplit("/", 1)[-1]
    return name_or_arn


def managed_policy_arn(name_or_arn: str) -> str:
    """The ARN of a managed policy given by name or ARN."""
    return ARN_PREFIX + managed_policy_name(name_or_arn)


def get_managed_policy(name_or_arn: str) -> dict[str, Any]:
    """A copy of the managed policy's document. Raises `NotFound` for a policy rehost does not know."""
    name = managed_policy_name(name_or_arn)
    try:
        return copy.deepcopy(_POLICIES[name])
    except KeyError as exc:
        raise NotFound(
            f"Policy {ARN_PREFIX}{name} does not exist or is not attachable.",
            resource_id=name_or_arn,
            resource_type="policy",
        ) from exc
