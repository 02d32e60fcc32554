"""IAM policy evaluation and validation, and the managed policies rehost ships."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rehost.errors import InvalidInput, NotFound
from rehost.iam.managed import (
    MANAGED_POLICY_ARNS,
    get_managed_policy,
    managed_policy_arn,
    managed_policy_name,
    managed_policy_names,
)
from rehost.iam.policy import (
    Decision,
    MalformedPolicyDocument,
    PolicyDocument,
    access_denied_message,
    evaluate,
    validate_policy_document,
)

ALLOW, DENY, IMPLICIT = Decision.ALLOW, Decision.EXPLICIT_DENY, Decision.IMPLICIT_DENY
SERVER = "arn:aws:mgn:us-east-1:123456789012:source-server/s-1234567890abcdef0"
OTHER_SERVER = "arn:aws:mgn:us-east-1:123456789012:source-server/s-00000000000000000"
JOB = "arn:aws:mgn:us-east-1:123456789012:job/mgnjob-1234567890abcdef0"


def policy(*statements: dict[str, Any], version: str = "2012-10-17") -> dict[str, Any]:
    return {"Version": version, "Statement": list(statements)}


def allow(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


# -- evaluation ------------------------------------------------------------------------------------------


def test_deny_beats_allow_across_and_within_policies() -> None:
    full = policy(allow("mgn:*"))
    no_cutover = policy(deny("mgn:StartCutover"))
    assert evaluate([full], "mgn:StartCutover", SERVER) is ALLOW
    assert evaluate([full, no_cutover], "mgn:StartCutover", SERVER) is DENY
    assert evaluate([no_cutover, full], "mgn:StartCutover", SERVER) is DENY
    assert evaluate([policy(allow("mgn:*"), deny("mgn:Start*"))], "mgn:StartTest", SERVER) is DENY
    assert evaluate([full, no_cutover], "mgn:StartTest", SERVER) is ALLOW


def test_nothing_allows_is_implicit_deny() -> None:
    assert evaluate([], "mgn:DescribeJobs", "*") is IMPLICIT
    assert evaluate([policy(allow("ec2:*"))], "mgn:DescribeJobs", "*") is IMPLICIT


def test_action_wildcards_and_case_insensitivity() -> None:
    doc = policy(allow(["mgn:Describe*", "mgn:Get?aunchConfiguration"]))
    assert evaluate([doc], "mgn:DescribeSourceServers", "*") is ALLOW
    assert evaluate([doc], "MGN:describesourceservers", "*") is ALLOW
    assert evaluate([doc], "mgn:GetLaunchConfiguration", "*") is ALLOW
    assert evaluate([doc], "mgn:GetXXLaunchConfiguration", "*") is IMPLICIT
    assert evaluate([doc], "mgn:StartTest", "*") is IMPLICIT
    assert evaluate([policy(allow("*"))], "ec2:TerminateInstances", "*") is ALLOW
    assert evaluate([policy(allow("mgn:StartTest"))], "mgn:StartTestX", "*") is IMPLICIT


def test_resource_matching_is_case_sensitive_and_segment_aware() -> None:
    doc = policy(allow("mgn:*", "arn:aws:mgn:*:*:source-server/*"))
    assert evaluate([doc], "mgn:TagResource", SERVER) is ALLOW
    assert evaluate([doc], "mgn:TagResource", JOB) is IMPLICIT
    assert evaluate([doc], "mgn:TagResource", SERVER.replace("source-server", "Source-Server")) is IMPLICIT
    # A wildcard in the region part does not swallow colons.
    assert evaluate([policy(allow("mgn:*", "arn:aws:mgn:*:source-server/*"))], "mgn:X", SERVER) is IMPLICIT
    one = policy(allow("mgn:*", SERVER))
    assert evaluate([one], "mgn:StartTest", SERVER) is ALLOW
    assert evaluate([one], "mgn:StartTest", OTHER_SERVER) is IMPLICIT
    assert evaluate([policy(allow("mgn:*", "arn:aws:mgn:us-east-1:123456789012:source-server/s-?234*"))],
                    "mgn:StartTest", SERVER) is ALLOW  # fmt: skip


def test_not_action_and_not_resource() -> None:
    doc = policy({"Effect": "Allow", "NotAction": ["mgn:StartCutover", "mgn:Delete*"], "Resource": "*"})
    assert evaluate([doc], "mgn:StartTest", SERVER) is ALLOW
    assert evaluate([doc], "mgn:StartCutover", SERVER) is IMPLICIT
    assert evaluate([doc], "mgn:DeleteSourceServer", SERVER) is IMPLICIT
    deny_others = policy(allow("mgn:*"), {"Effect": "Deny", "Action": "mgn:*", "NotResource": SERVER})
    assert evaluate([deny_others], "mgn:StartTest", SERVER) is ALLOW
    assert evaluate([deny_others], "mgn:StartTest", OTHER_SERVER) is DENY


def test_statement_may_be_a_single_object_and_strings_or_lists() -> None:
    doc = {
        "Version": "2012-10-17",
        "Statement": {"Effect": "Allow", "Action": "mgn:ListWaves", "Resource": ["*"]},
    }
    assert evaluate([doc], "mgn:ListWaves", "*") is ALLOW
    assert evaluate([json.dumps(doc)], "mgn:ListWaves", "*") is ALLOW
    assert evaluate([PolicyDocument.parse(doc)], "mgn:ListWaves", "*") is ALLOW


def test_conditions_string_and_arn_operators() -> None:
    doc = policy(
        allow("mgn:*", Condition={"StringEquals": {"aws:RequestedRegion": ["us-east-1", "us-west-2"]}}),
        deny("mgn:*", Condition={"StringLike": {"aws:ResourceTag/Env": "prod*"}}),
    )
    assert evaluate([doc], "mgn:StartTest", SERVER, {"aws:RequestedRegion": "us-east-1"}) is ALLOW
    assert evaluate([doc], "mgn:StartTest", SERVER, {"AWS:requestedregion": "us-west-2"}) is ALLOW
    assert evaluate([doc], "mgn:StartTest", SERVER, {"aws:RequestedRegion": "eu-west-1"}) is IMPLICIT
    assert evaluate([doc], "mgn:StartTest", SERVER, {}) is IMPLICIT
    ctx = {"aws:RequestedRegion": "us-east-1", "aws:ResourceTag/Env": "production"}
    assert evaluate([doc], "mgn:StartTest", SERVER, ctx) is DENY

    not_eq = policy(allow("mgn:*", Condition={"StringNotEquals": {"aws:username": "mallory"}}))
    assert evaluate([not_eq], "mgn:ListWaves", "*", {"aws:username": "alice"}) is ALLOW
    assert evaluate([not_eq], "mgn:ListWaves", "*", {"aws:username": "mallory"}) is IMPLICIT
    assert evaluate([not_eq], "mgn:ListWaves", "*", {}) is ALLOW  # absent key satisfies a negated operator

    arn = policy(
        allow("iam:PassRole", Condition={"ArnLike": {"aws:SourceArn": "arn:aws:mgn:*:*:source-server/*"}})
    )
    assert evaluate([arn], "iam:PassRole", "*", {"aws:SourceArn": SERVER}) is ALLOW
    assert evaluate([arn], "iam:PassRole", "*", {"aws:SourceArn": JOB}) is IMPLICIT

    if_exists = policy(allow("mgn:*", Condition={"StringEqualsIfExists": {"aws:username": "alice"}}))
    assert evaluate([if_exists], "mgn:ListWaves", "*", {}) is ALLOW
    assert evaluate([if_exists], "mgn:ListWaves", "*", {"aws:username": "bob"}) is IMPLICIT


def test_other_condition_operators() -> None:
    def allowed(condition: dict[str, Any], ctx: dict[str, Any]) -> bool:
        return evaluate([policy(allow("mgn:*", Condition=condition))], "mgn:ListWaves", "*", ctx) is ALLOW

    assert allowed({"Bool": {"aws:SecureTransport": True}}, {"aws:SecureTransport": "true"})
    assert not allowed({"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": "false"})
    assert allowed({"Null": {"aws:TokenIssueTime": "true"}}, {})
    assert not allowed(
        {"Null": {"aws:TokenIssueTime": "true"}}, {"aws:TokenIssueTime": "2024-01-01T00:00:00Z"}
    )
    assert allowed({"NumericLessThan": {"mgn:maxResults": 100}}, {"mgn:maxResults": "50"})
    assert not allowed({"NumericLessThan": {"mgn:maxResults": 100}}, {"mgn:maxResults": "500"})
    assert allowed(
        {"DateGreaterThan": {"aws:CurrentTime": "2024-01-01T00:00:00Z"}},
        {"aws:CurrentTime": "2025-06-01T00:00:00Z"},
    )
    assert allowed({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "10.1.2.3"})
    assert not allowed({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "10.1.2.3"})
    tags = {"aws:TagKeys": ["Name", "Env"]}
    assert allowed({"ForAllValues:StringEquals": {"aws:TagKeys": ["Name", "Env", "Owner"]}}, tags)
    assert not allowed({"ForAllValues:StringEquals": {"aws:TagKeys": ["Name"]}}, tags)
    assert allowed({"ForAnyValue:StringEquals": {"aws:TagKeys": ["Env"]}}, tags)
    assert not allowed({"ForAnyValue:StringEquals": {"aws:TagKeys": ["Owner"]}}, tags)


def test_unsupported_condition_operator_fails_closed() -> None:
    # validate rejects the operator; a document that skipped validation is evaluated fail-closed.
    odd = {"StringSoundsLike": {"aws:username": "alice"}}
    with pytest.raises(MalformedPolicyDocument):
        validate_policy_document(policy(allow("mgn:*", Condition=odd)))
    ctx = {"aws:username": "alice"}
    assert evaluate([policy(allow("mgn:*", Condition=odd))], "mgn:ListWaves", "*", ctx) is IMPLICIT
    with_deny = policy(allow("mgn:*"), deny("mgn:*", Condition=odd))
    assert evaluate([with_deny], "mgn:ListWaves", "*", {"aws:username": "bob"}) is DENY


def test_policy_variables() -> None:
    own = policy(allow("mgn:*", "arn:aws:mgn:*:*:source-server/${aws:SourceIdentity}"))
    ctx = {"aws:SourceIdentity": "s-1234567890abcdef0"}
    assert evaluate([own], "mgn:GetAgentCommandForMgn", SERVER, ctx) is ALLOW
    assert evaluate([own], "mgn:GetAgentCommandForMgn", OTHER_SERVER, ctx) is IMPLICIT
    assert evaluate([own], "mgn:GetAgentCommandForMgn", SERVER, {}) is IMPLICIT
    # A substituted value is literal: a '*' in it is not a wildcard.
    assert evaluate([own], "mgn:GetAgentCommandForMgn", SERVER, {"aws:SourceIdentity": "*"}) is IMPLICIT
    # Version 2008-10-17 has no variables: the text is literal.
    old = policy(allow("mgn:*", "arn:aws:mgn:*:*:source-server/${aws:SourceIdentity}"), version="2008-10-17")
    assert evaluate([old], "mgn:GetAgentCommandForMgn", SERVER, ctx) is IMPLICIT
    default = policy(
        allow("mgn:*", "arn:aws:mgn:*:*:source-server/${aws:SourceIdentity, 's-1234567890abcdef0'}")
    )
    assert evaluate([default], "mgn:X", SERVER, {}) is ALLOW
    cond = policy(allow("iam:*", Condition={"StringEquals": {"iam:ResourceTag/owner": "${aws:username}"}}))
    assert (
        evaluate([cond], "iam:GetUser", "*", {"aws:username": "bob", "iam:ResourceTag/owner": "bob"}) is ALLOW
    )
    assert (
        evaluate([cond], "iam:GetUser", "*", {"aws:username": "bob", "iam:ResourceTag/owner": "eve"})
        is IMPLICIT
    )


def test_access_denied_message_names_the_reason() -> None:
    user = "arn:aws:iam::123456789012:user/MGNuser"
    assert access_denied_message(user, "mgn:StartCutover", SERVER, IMPLICIT) == (
        f"User: {user} is not authorized to perform: mgn:StartCutover on resource: {SERVER} "
        "because no identity-based policy allows the mgn:StartCutover action"
    )
    assert "explicit deny" in access_denied_message(user, "mgn:StartCutover", SERVER, DENY)


# -- validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "detail"),
    [
        ("{not json", "Syntax errors in policy."),
        ("[]", "Syntax errors in policy."),
        ({"Statement": [allow("mgn:*")]}, "The policy must contain a valid version string"),
        (
            {"Version": "2020-01-01", "Statement": [allow("mgn:*")]},
            "The policy must contain a valid version string",
        ),
        ({"Version": "2012-10-17"}, "Missing required field Statement"),
        ({"Version": "2012-10-17", "Statement": []}, "Missing required field Statement"),
        (policy({"Action": "mgn:*", "Resource": "*"}), "Missing required field Effect"),
        (policy({"Effect": "allow", "Action": "mgn:*", "Resource": "*"}), "Invalid effect: allow"),
        (policy({"Effect": "Allow", "Resource": "*"}), "Action"),
        (policy({"Effect": "Allow", "Action": "mgn:*", "NotAction": "ec2:*", "Resource": "*"}), "Action"),
        (policy({"Effect": "Allow", "Action": "mgn:*"}), "Resource"),
        (policy(allow("StartCutover")), "prefaced by a vendor"),
        (policy(allow(["mgn:*", 3])), "Syntax errors in policy."),
        (policy(allow("mgn:*", "source-server/s-1")), 'must be in ARN format or "*"'),
        (policy(allow("mgn:*", Principal={"AWS": "*"})), "should not specify a principal"),
        (policy(allow("mgn:*", Sid="A"), allow("ec2:*", Sid="A")), "must be unique"),
        (policy(allow("mgn:*", Condition={"StringEquals": "x"})), "Syntax errors in policy."),
        (policy(allow("mgn:*", Frobnicate=1)), "Syntax errors in policy."),
    ],
)
def test_malformed_documents_are_rejected(document: Any, detail: str) -> None:
    with pytest.raises(MalformedPolicyDocument) as exc:
        validate_policy_document(document)
    assert str(exc.value).startswith("MalformedPolicyDocument: ")
    assert detail in str(exc.value)
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, InvalidInput)
    with pytest.raises(MalformedPolicyDocument):
        evaluate([document], "mgn:ListWaves", "*")


def test_valid_document_round_trips() -> None:
    doc = policy(allow("mgn:*", Sid="Ops", Condition={"Bool": {"aws:SecureTransport": "true"}}))
    assert validate_policy_document(json.dumps(doc)) == doc
    assert validate_policy_document(json.dumps(doc).encode()) == doc


# -- managed policies ------------------------------------------------------------------------------------


def managed(name: str) -> list[dict[str, Any]]:
    return [get_managed_policy(name)]


def test_every_managed_policy_is_valid_and_addressable_by_arn() -> None:
    assert set(managed_policy_names()) >= {
        "AWSApplicationMigrationFullAccess",
        "AWSApplicationMigrationReadOnlyAccess",
        "AWSApplicationMigrationAgentPolicy",
        "AWSApplicationMigrationAgentInstallationPolicy",
        "AWSApplicationMigrationAgentPolicy_v2",
    }
    for name in managed_policy_names():
        arn = MANAGED_POLICY_ARNS[name]
        assert arn == f"arn:aws:iam::aws:policy/{name}" == managed_policy_arn(name)
        assert managed_policy_name(arn) == name
        assert validate_policy_document(get_managed_policy(name)) == get_managed_policy(arn)


def test_unknown_managed_policy_is_not_found() -> None:
    with pytest.raises(NotFound) as exc:
        get_managed_policy("AWSApplicationMigrationEverything")
    assert "does not exist or is not attachable" in exc.value.message
    with pytest.raises(NotFound):
        get_managed_policy("arn:aws:iam::aws:policy/AdministratorAccess")


def test_managed_policy_copies_are_independent() -> None:
    doc = get_managed_policy("AWSApplicationMigrationAgentPolicy")
    doc["Statement"].clear()
    assert get_managed_policy("AWSApplicationMigrationAgentPolicy")["Statement"]


HANDS_ON_AGENT_ACTIONS = """SendAgentMetricsForMgn SendAgentLogsForMgn SendClientMetricsForMgn SendClientLogsForMgn
RegisterAgentForMgn UpdateAgentSourcePropertiesForMgn UpdateAgentReplicationInfoForMgn
UpdateAgentConversionInfoForMgn GetAgentInstallationAssetsForMgn GetAgentCommandForMgn
GetAgentConfirmedResumeInfoForMgn GetAgentRuntimeConfigurationForMgn UpdateAgentBacklogForMgn
GetAgentReplicationInfoForMgn""".split()


def test_agent_policy_is_exactly_the_hands_on_list() -> None:
    docs = managed("AWSApplicationMigrationAgentPolicy")
    for action in HANDS_ON_AGENT_ACTIONS:
        assert evaluate(docs, f"mgn:{action}", SERVER) is ALLOW, action
        assert evaluate(docs, f"mgn:{action}", "arn:aws:mgn:us-east-1:123456789012:source-server/*") is ALLOW
    assert evaluate(docs, "mgn:RegisterAgentForMgn", "*") is ALLOW
    granted = {a for st in docs[0]["Statement"] for a in st["Action"]}
    assert granted == {f"mgn:{a}" for a in HANDS_ON_AGENT_ACTIONS} | {"mgn:TagResource"}
    assert evaluate(docs, "mgn:TagResource", SERVER) is ALLOW
    assert evaluate(docs, "mgn:TagResource", JOB) is IMPLICIT
    for action in ("mgn:StartCutover", "mgn:StartTest", "mgn:DescribeSourceServers", "mgn:UntagResource"):
        assert evaluate(docs, action, SERVER) is IMPLICIT, action


def test_read_only_policy() -> None:
    docs = managed("AWSApplicationMigrationReadOnlyAccess")
    assert evaluate(docs, "mgn:DescribeSourceServers", "*") is ALLOW
    assert evaluate(docs, "mgn:DescribeJobLogItems", JOB) is ALLOW
    assert evaluate(docs, "ec2:DescribeInstances", "*") is ALLOW
    for action in (
        "mgn:UpdateLaunchConfiguration",
        "mgn:StartTest",
        "mgn:RegisterAgentForMgn",
        "ec2:TerminateInstances",
    ):
        assert evaluate(docs, action, SERVER) is IMPLICIT, action


def test_full_access_policy_covers_the_operator_steps() -> None:
    docs = managed("AWSApplicationMigrationFullAccess")
    for action in ("mgn:StartCutover", "mgn:InitializeService", "mgn:UpdateLaunchConfiguration",
                   "ec2:DescribeLaunchTemplateVersions", "ec2:CreateLaunchTemplateVersion",
                   "ec2:ModifyLaunchTemplate", "ec2:TerminateInstances", "ec2:GetConsoleOutput"):  # fmt: skip
        assert evaluate(docs, action, "*") is ALLOW, action
    assert evaluate(docs, "ec2:RunInstances", "*") is IMPLICIT
    role = "arn:aws:iam::123456789012:role/service-role/AWSApplicationMigrationConversionServerRole"
    assert evaluate(docs, "iam:PassRole", role, {"iam:PassedToService": "ec2.amazonaws.com"}) is ALLOW
    assert evaluate(docs, "iam:PassRole", role, {"iam:PassedToService": "lambda.amazonaws.com"}) is IMPLICIT
    assert evaluate(docs, "iam:PassRole", "arn:aws:iam::123456789012:role/Admin", {}) is IMPLICIT


def test_agent_v2_is_scoped_to_its_own_server() -> None:
    docs = managed("AWSApplicationMigrationAgentPolicy_v2")
    ctx = {"aws:SourceIdentity": "s-1234567890abcdef0"}
    assert evaluate(docs, "mgn:GetAgentCommandForMgn", SERVER, ctx) is ALLOW
    assert evaluate(docs, "mgn:GetAgentCommandForMgn", OTHER_SERVER, ctx) is IMPLICIT
    assert evaluate(docs, "mgn:RegisterAgentForMgn", SERVER, ctx) is IMPLICIT


def test_installation_policy() -> None:
    docs = managed("AWSApplicationMigrationAgentInstallationPolicy")
    assert evaluate(docs, "mgn:RegisterAgentForMgn", "*") is ALLOW
    assert evaluate(docs, "mgn:TagResource", SERVER) is ALLOW
    assert evaluate(docs, "mgn:GetAgentCommandForMgn", SERVER) is IMPLICIT
