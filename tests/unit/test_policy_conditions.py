"""IAM condition operators with the keys rehost puts in a request's context (aws:SourceIp, aws:CurrentTime,
aws:SecureTransport, aws:PrincipalTag/<key>, aws:username, aws:userid, aws:RequestedRegion)."""

from __future__ import annotations

from typing import Any

import pytest

from rehost.iam.policy import Decision, MalformedPolicyDocument, evaluate, validate_policy_document

CONTEXT = {
    "aws:SourceIp": "192.0.2.10",
    "aws:CurrentTime": "2026-06-01T12:00:00Z",
    "aws:EpochTime": "1780315200",
    "aws:SecureTransport": "false",
    "aws:RequestedRegion": "us-east-1",
    "aws:username": "alice",
    "aws:userid": "AIDAEXAMPLEUSER0001",
    "aws:PrincipalTag/team": "blue",
    "aws:PrincipalTag/CostCenter": "1234",
    "aws:TagKeys": ["Name", "Env"],
}


def _doc(effect: str, condition: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": effect, "Action": "mgn:*", "Resource": "*", "Condition": condition}]}


def allowed(condition: dict[str, Any], context: dict[str, Any] | None = None) -> bool:
    document = _doc("Allow", condition)
    validate_policy_document(document)
    return evaluate([document], "mgn:StartTest", "*", CONTEXT if context is None else context) is Decision.ALLOW


@pytest.mark.parametrize(("condition", "expected"), [
    # aws:SourceIp
    ({"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}, True),
    ({"IpAddress": {"aws:SourceIp": "192.0.2.10"}}, True),  # a bare address is a /32
    ({"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.0.2.0/28"]}}, True),  # values are ORed
    ({"IpAddress": {"aws:SourceIp": "198.51.100.0/24"}}, False),
    ({"IpAddress": {"aws:SourceIp": "::/0"}}, False),  # never across IP versions
    ({"NotIpAddress": {"aws:SourceIp": "198.51.100.0/24"}}, True),
    ({"NotIpAddress": {"aws:SourceIp": ["198.51.100.0/24", "192.0.2.0/24"]}}, False),
    # aws:CurrentTime / aws:EpochTime
    ({"DateGreaterThan": {"aws:CurrentTime": "2026-01-01T00:00:00Z"}}, True),
    ({"DateLessThan": {"aws:CurrentTime": "2026-01-01T00:00:00Z"}}, False),
    ({"DateLessThanEquals": {"aws:CurrentTime": "2026-06-01T12:00:00Z"}}, True),
    ({"DateGreaterThanEquals": {"aws:CurrentTime": "2026-06-01"}}, True),
    ({"DateEquals": {"aws:CurrentTime": "2026-06-01T14:00:00+02:00"}}, True),
    ({"DateNotEquals": {"aws:CurrentTime": "2026-06-01T12:00:00Z"}}, False),
    ({"DateLessThan": {"aws:CurrentTime": 1780315201}}, True),  # epoch seconds
    ({"NumericGreaterThanEquals": {"aws:EpochTime": 1780315200}}, True),
    ({"NumericLessThan": {"aws:EpochTime": "1780315200"}}, False),
    ({"NumericNotEquals": {"aws:EpochTime": "1780315200.0"}}, False),
    # aws:SecureTransport
    ({"Bool": {"aws:SecureTransport": "true"}}, False),
    ({"Bool": {"aws:SecureTransport": False}}, True),
    ({"Bool": {"aws:SecureTransport": "FALSE"}}, True),
    # aws:PrincipalTag/<key>
    ({"StringEquals": {"aws:PrincipalTag/team": "blue"}}, True),
    ({"StringEquals": {"aws:principaltag/TEAM": "blue"}}, True),  # key names are case-insensitive
    ({"StringEquals": {"aws:PrincipalTag/team": "Blue"}}, False),  # values are not
    ({"StringEqualsIgnoreCase": {"aws:PrincipalTag/team": "BLUE"}}, True),
    ({"StringLike": {"aws:PrincipalTag/CostCenter": "12*"}}, True),
    ({"StringNotLike": {"aws:PrincipalTag/CostCenter": "12??"}}, False),
    ({"StringNotEquals": {"aws:PrincipalTag/team": "red"}}, True),
    ({"NumericLessThan": {"aws:PrincipalTag/CostCenter": 2000}}, True),
    ({"StringEquals": {"aws:PrincipalTag/project": "x"}}, False),  # an absent tag
    ({"StringEqualsIfExists": {"aws:PrincipalTag/project": "x"}}, True),
    ({"StringEqualsIfExists": {"aws:PrincipalTag/team": "red"}}, False),  # present: checked as usual
    ({"Null": {"aws:PrincipalTag/project": "true"}}, True),
    ({"Null": {"aws:PrincipalTag/team": "true"}}, False),
    ({"Null": {"aws:PrincipalTag/team": "false"}}, True),
    # aws:username, aws:userid, aws:RequestedRegion, and a variable in a condition value
    ({"StringEquals": {"aws:username": "alice"}}, True),
    ({"StringLike": {"aws:userid": "AIDA*"}}, True),
    ({"StringEquals": {"aws:RequestedRegion": ["eu-west-1", "us-east-1"]}}, True),
    ({"StringNotEquals": {"aws:RequestedRegion": "us-east-1"}}, False),
    ({"StringLike": {"aws:PrincipalTag/team": "${aws:username}"}}, False),
    ({"StringEquals": {"aws:username": "${aws:username}"}}, True),
    # keys of one block are ANDed, as are blocks
    ({"StringEquals": {"aws:username": "alice", "aws:PrincipalTag/team": "red"}}, False),
    ({"StringEquals": {"aws:username": "alice"}, "IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}, True),
    ({"StringEquals": {"aws:username": "alice"}, "Bool": {"aws:SecureTransport": "true"}}, False),
    # multi-valued keys
    ({"ForAllValues:StringEquals": {"aws:TagKeys": ["Name", "Env", "Owner"]}}, True),
    ({"ForAllValues:StringLike": {"aws:TagKeys": ["N*"]}}, False),
    ({"ForAnyValue:StringLike": {"aws:TagKeys": ["E*"]}}, True),
    ({"ForAllValues:StringNotEquals": {"aws:TagKeys": ["Owner"]}}, True),
    ({"ForAnyValue:StringEquals": {"aws:NoSuchList": ["x"]}}, False),
    ({"ForAllValues:StringEquals": {"aws:NoSuchList": ["x"]}}, True),  # vacuously, as AWS documents
    # keys absent from the context
    ({"StringEquals": {"aws:NoSuchKey": "x"}}, False),
    ({"IpAddress": {"aws:NoSuchKey": "10.0.0.0/8"}}, False),
    ({"DateLessThan": {"aws:NoSuchKey": "2030-01-01T00:00:00Z"}}, False),
    ({"Bool": {"aws:NoSuchKey": "false"}}, False),
    ({"BoolIfExists": {"aws:NoSuchKey": "true"}}, True),
    ({"NumericLessThanIfExists": {"aws:NoSuchKey": "1"}}, True),
    ({"StringNotEquals": {"aws:NoSuchKey": "x"}}, True),  # a negated operator holds when the key is absent
])
def test_operators_on_the_request_context(condition: dict[str, Any], expected: bool) -> None:
    assert allowed(condition) is expected


def test_ipv4_mapped_ipv6_source_is_its_ipv4_address() -> None:
    assert allowed({"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}, {"aws:SourceIp": "::ffff:192.0.2.10"})
    assert allowed({"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}, {"aws:SourceIp": "2001:db8::5"})
    assert not allowed({"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}, {"aws:SourceIp": "not an address"})


def test_a_deny_with_a_condition_wins_only_when_it_holds() -> None:
    document = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "mgn:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "mgn:*", "Resource": "*",
         "Condition": {"NotIpAddress": {"aws:SourceIp": "192.0.2.0/24"}}},
        {"Effect": "Deny", "Action": "mgn:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]}
    tls_inside = {**CONTEXT, "aws:SecureTransport": "true"}
    assert evaluate([document], "mgn:StartTest", "*", tls_inside) is Decision.ALLOW
    assert evaluate([document], "mgn:StartTest", "*", CONTEXT) is Decision.EXPLICIT_DENY
    assert evaluate([document], "mgn:StartTest", "*", {**tls_inside, "aws:SourceIp": "203.0.113.1"}) \
        is Decision.EXPLICIT_DENY


@pytest.mark.parametrize("condition", [
    {"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}},
    {"NotIpAddress": {"aws:SourceIp": "office"}},
    {"DateLessThan": {"aws:CurrentTime": "next tuesday"}},
    {"NumericEquals": {"aws:EpochTime": "NaN"}},
    {"NumericLessThan": {"aws:EpochTime": "ten"}},
    {"Bool": {"aws:SecureTransport": "yes"}},
    {"NullIfExists": {"aws:username": "true"}},
    {"ForEveryValue:StringEquals": {"aws:TagKeys": "x"}},
])
def test_unreadable_condition_values_and_operators_are_malformed(condition: dict[str, Any]) -> None:
    with pytest.raises(MalformedPolicyDocument):
        validate_policy_document(_doc("Allow", condition))


def test_unreadable_values_in_an_unvalidated_document_fail_closed() -> None:
    # evaluate() on a stored document that skipped validation: it grants nothing, and denies.
    for condition in ({"NotIpAddress": {"aws:SourceIp": "office"}}, {"DateNotEquals": {"aws:CurrentTime": "soon"}},
                      {"NumericNotEquals": {"aws:EpochTime": "many"}}):
        allow = _doc("Allow", condition)
        assert evaluate([allow], "mgn:StartTest", "*", CONTEXT) is Decision.IMPLICIT_DENY, condition
        deny = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "mgn:*", "Resource": "*"},
                                                       *_doc("Deny", condition)["Statement"]]}
        assert evaluate([deny], "mgn:StartTest", "*", CONTEXT) is Decision.EXPLICIT_DENY, condition


def test_tag_keys_of_a_request_and_of_its_resources() -> None:
    from rehost.api.core.dispatch import _tag_keys

    ctx = {**CONTEXT, **_tag_keys({"resourceArn": "arn:...", "tags": {"owner": "alice", "env": "test"}})}
    assert ctx["aws:TagKeys"] == ["owner", "env"]
    assert allowed({"StringEquals": {"aws:RequestTag/owner": "${aws:username}"}}, ctx)
    assert allowed({"ForAllValues:StringEquals": {"aws:TagKeys": ["owner", "env", "cost"]}}, ctx)
    assert not allowed({"ForAllValues:StringEquals": {"aws:TagKeys": ["owner"]}}, ctx)
    assert _tag_keys({"resourceArn": "arn:...", "tagKeys": ["env"]}) == {"aws:TagKeys": ["env"]}
    assert _tag_keys({"sourceServerIDs": ["s-1"]}) == {}
