"""IAM identity-policy validation and evaluation, as AWS does it.

`evaluate(policies, action, resource, context)` returns a `Decision`:
- ``EXPLICIT_DENY`` if any applicable statement has ``"Effect": "Deny"`` (it beats every Allow),
- else ``ALLOW`` if any applicable statement has ``"Effect": "Allow"``,
- else ``IMPLICIT_DENY`` (nothing allowed it).

A statement applies when its Action (or NotAction), its Resource (or NotResource) and all its Condition
blocks match. Matching rules a caller may rely on:
- ``*`` matches any run of characters and ``?`` one character. Action names ("service:Action") match
  case-insensitively, as IAM does; resources match case-sensitively. In an ARN pattern a wildcard in one of
  the first five colon-separated parts (partition, service, region, account) does not reach across a colon.
- Policy variables (``${aws:username}``, ``${aws:SourceIdentity}``, ``${aws:username, 'default'}`` and the
  escapes ``${*}``, ``${?}``, ``${$}``) are replaced from `context` in Resource / NotResource and in the
  values of String* and Arn* conditions, for documents with ``"Version": "2012-10-17"``. A variable missing
  from the context (and without a default) makes that pattern match nothing.
- Conditions: String{Equals,NotEquals,EqualsIgnoreCase,NotEqualsIgnoreCase,Like,NotLike},
  Arn{Equals,NotEquals,Like,NotLike}, Numeric*, Date*, Bool, BinaryEquals, IpAddress / NotIpAddress and
  Null, with the ``...IfExists`` suffix and the ``ForAnyValue:`` / ``ForAllValues:`` prefixes. Context keys
  are matched case-insensitively. A key missing from the context fails a positive operator and satisfies a
  negated one (StringNotEquals, ...), as AWS documents; ``...IfExists`` is satisfied by a missing key, and
  Null tests presence. Multiple values of one key are ORed, keys and operators of a block ANDed.
  IpAddress takes an IPv4-mapped IPv6 source (``::ffff:10.0.0.1``) as the IPv4 address, and never matches
  an address of the other IP version. Dates are ISO 8601 or epoch seconds.
- Validation rejects a condition value its operator cannot read (an IpAddress value that is no address or
  CIDR, a Numeric one that is no number, a Date one that is no date, a Bool one other than true/false).
- Fail closed: a condition operator this module does not know, or a policy value it cannot read (only
  possible for a document that was not validated) never lets an Allow statement apply and always lets a
  Deny statement apply.

Only identity-based policies are handled: ``Principal`` is rejected, and there are no permission
boundaries, SCPs or resource policies.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from rehost.errors import InvalidInput

VERSIONS = ("2012-10-17", "2008-10-17")
_STATEMENT_KEYS = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
_BASE_OPERATORS = {
    "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase",
    "StringLike", "StringNotLike",
    "ArnEquals", "ArnNotEquals", "ArnLike", "ArnNotLike",
    "NumericEquals", "NumericNotEquals", "NumericLessThan", "NumericLessThanEquals",
    "NumericGreaterThan", "NumericGreaterThanEquals",
    "DateEquals", "DateNotEquals", "DateLessThan", "DateLessThanEquals",
    "DateGreaterThan", "DateGreaterThanEquals",
    "Bool", "BinaryEquals", "IpAddress", "NotIpAddress",
}  # fmt: skip
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "NumericNotEquals": "NumericEquals",
    "DateNotEquals": "DateEquals",
    "NotIpAddress": "IpAddress",
}
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_ACTION = re.compile(r"^(\*|[A-Za-z0-9*?-]+:[A-Za-z0-9*?]*)$")

Context = Mapping[str, str | Sequence[str]]


class Decision(StrEnum):
    """The outcome of `evaluate`; only ``ALLOW`` permits the request."""

    ALLOW = "ALLOW"
    EXPLICIT_DENY = "EXPLICIT_DENY"
    IMPLICIT_DENY = "IMPLICIT_DENY"


class MalformedPolicyDocument(InvalidInput, ValueError):
    """The policy document is not valid."""

    code = "MalformedPolicyDocument"

    def __init__(self, detail: str) -> None:
        super().__init__(f"MalformedPolicyDocument: {detail}")
        self.detail = detail


@dataclass(frozen=True)
class Statement:
    """One validated statement; `actions` / `resources` hold the NotAction / NotResource lists when
    `not_action` / `not_resource` is set."""

    effect: str
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    conditions: tuple[tuple[str, str, tuple[str, ...]], ...]  # (operator, key, values)
    sid: str | None = None


@dataclass(frozen=True)
class PolicyDocument:
    """A validated identity policy."""

    version: str
    statements: tuple[Statement, ...]

    @classmethod
    def parse(cls, document: str | bytes | Mapping[str, Any]) -> PolicyDocument:
        """Validate (see `validate_policy_document`) and compile a document."""
        return _compile_document(validate_policy_document(document), check_operators=True)


# -- validation ----------------------------------------------------------------------------------------


def _strings(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise MalformedPolicyDocument(f"Syntax errors in policy. {what} must be a string or a list of strings.")


def _condition_values(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, str | int | float):
            out.append(str(item))
        else:
            raise MalformedPolicyDocument("Syntax errors in policy. Condition values must be strings.")
    return tuple(out)


def _split_operator(operator: str) -> tuple[str, str, bool]:
    """``ForAnyValue:StringLikeIfExists`` -> ("ForAnyValue", "StringLike", if_exists=True)."""
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists") and base != "IfExists"
    if if_exists:
        base = base[: -len("IfExists")]
    return qualifier, base, if_exists


def _known_operator(operator: str) -> bool:
    qualifier, base, if_exists = _split_operator(operator)
    if qualifier not in ("", "ForAnyValue", "ForAllValues"):
        return False
    return base in _BASE_OPERATORS or (base == "Null" and not if_exists)


def _validate_statement(st: Any, check_operators: bool) -> None:
    if not isinstance(st, dict):
        raise MalformedPolicyDocument("Syntax errors in policy. Each statement must be an object.")
    if "Principal" in st or "NotPrincipal" in st:
        raise MalformedPolicyDocument("Policy document should not specify a principal.")
    unknown = sorted(set(st) - _STATEMENT_KEYS)
    if unknown:
        raise MalformedPolicyDocument(f"Syntax errors in policy. Unknown statement element '{unknown[0]}'.")
    if "Effect" not in st:
        raise MalformedPolicyDocument("Missing required field Effect")
    if st["Effect"] not in ("Allow", "Deny"):
        raise MalformedPolicyDocument(f"Invalid effect: {st['Effect']}")
    if ("Action" in st) == ("NotAction" in st):
        raise MalformedPolicyDocument("Policy statement must contain exactly one of Action and NotAction.")
    for action in _strings(st.get("Action", st.get("NotAction")), "Action"):
        if not _ACTION.match(action):
            raise MalformedPolicyDocument(
                f"Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc. Got '{action}'."
            )
    if ("Resource" in st) == ("NotResource" in st):
        raise MalformedPolicyDocument(
            "Policy statement must contain exactly one of Resource and NotResource."
        )
    for resource in _strings(st.get("Resource", st.get("NotResource")), "Resource"):
        if resource != "*" and not resource.startswith("arn:"):
            raise MalformedPolicyDocument(f'Resource {resource} must be in ARN format or "*".')
    if "Sid" in st and not (isinstance(st["Sid"], str) and re.fullmatch(r"[A-Za-z0-9]*", st["Sid"])):
        raise MalformedPolicyDocument("Statement IDs (SID) must be alpha-numeric.")
    condition = st.get("Condition", {})
    if not isinstance(condition, dict):
        raise MalformedPolicyDocument("Syntax errors in policy. Condition must be an object.")
    for operator, block in condition.items():
        if check_operators and not _known_operator(operator):
            raise MalformedPolicyDocument(f"Invalid Condition type : {operator}.")
        if not isinstance(block, dict) or not block:
            raise MalformedPolicyDocument(f"Syntax errors in policy. Condition {operator} must be an object.")
        for values in block.values():
            for value in _condition_values(values):
                if check_operators and _policy_value(_split_operator(operator)[1], value) is None:
                    raise MalformedPolicyDocument(f"Invalid value {value!r} for condition operator {operator}.")


def _load(document: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(document, bytes | str):
        try:
            loaded = json.loads(document)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedPolicyDocument("Syntax errors in policy.") from exc
    else:
        loaded = document
    if not isinstance(loaded, Mapping):
        raise MalformedPolicyDocument("Syntax errors in policy. The document must be a JSON object.")
    return dict(loaded)


def validate_policy_document(document: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    """Check an identity policy (JSON text or parsed) and return it as a dict.

    Raises `MalformedPolicyDocument` (a ValueError and an `InvalidInput`; its message reads
    ``MalformedPolicyDocument: <detail>``) for bad JSON, a missing or unknown Version, a missing or empty
    Statement, a statement without a valid Effect, Action/NotAction or Resource/NotResource, an action
    without a service prefix, a resource that is neither ``*`` nor an ARN, a Principal, duplicate Sids, or
    an unknown condition operator.
    """
    return _validate(document, check_operators=True)


def _validate(document: str | bytes | Mapping[str, Any], check_operators: bool) -> dict[str, Any]:
    doc = _load(document)
    unknown = sorted(set(doc) - {"Version", "Id", "Statement"})
    if unknown:
        raise MalformedPolicyDocument(f"Syntax errors in policy. Unknown element '{unknown[0]}'.")
    if doc.get("Version") not in VERSIONS:
        raise MalformedPolicyDocument("The policy must contain a valid version string")
    statements = doc.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise MalformedPolicyDocument("Missing required field Statement")
    sids: set[str] = set()
    for st in statements:
        _validate_statement(st, check_operators)
        sid = st.get("Sid")
        if sid:
            if sid in sids:
                raise MalformedPolicyDocument("Statement IDs (SID) in a single policy must be unique.")
            sids.add(sid)
    return doc


def _compile_document(doc: Mapping[str, Any], check_operators: bool) -> PolicyDocument:
    doc = _validate(doc, check_operators)
    raw = doc["Statement"]
    statements = []
    for st in [raw] if isinstance(raw, dict) else raw:
        conditions = tuple(
            (operator, key, _condition_values(values))
            for operator, block in st.get("Condition", {}).items()
            for key, values in block.items()
        )
        statements.append(
            Statement(
                effect=st["Effect"],
                actions=tuple(_strings(st.get("Action", st.get("NotAction")), "Action")),
                not_action="NotAction" in st,
                resources=tuple(_strings(st.get("Resource", st.get("NotResource")), "Resource")),
                not_resource="NotResource" in st,
                conditions=conditions,
                sid=st.get("Sid"),
            )
        )
    return PolicyDocument(version=doc["Version"], statements=tuple(statements))


# -- matching ------------------------------------------------------------------------------------------


def _lookup(context: Context, key: str) -> list[str] | None:
    """Context values for `key` (case-insensitive), or None when the key is absent."""
    wanted = key.lower()
    for name, value in context.items():
        if name.lower() == wanted:
            return [value] if isinstance(value, str) else list(value)
    return None


def _resolve_variable(body: str, context: Context) -> str | None:
    name, comma, default = body.partition(",")
    name = name.strip()
    if name in ("*", "?", "$"):
        return name
    values = _lookup(context, name)
    if values and len(values) == 1:
        return values[0]
    if comma:
        return default.strip().strip("'")
    return None


@lru_cache(maxsize=4096)
def _glob_regex(pieces: tuple[tuple[bool, str], ...], ignore_case: bool, arn: bool) -> re.Pattern[str]:
    """Compile (is_literal, text) pieces; wildcards live only in non-literal pieces."""
    out: list[str] = []
    colons = 0
    for literal, text in pieces:
        if literal:
            out.append(re.escape(text))
            continue
        for ch in text:
            within_segment = arn and colons < 5
            if ch == "*":
                out.append("[^:]*" if within_segment else ".*")
            elif ch == "?":
                out.append("[^:]" if within_segment else ".")
            else:
                colons += ch == ":"
                out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _pattern_matches(
    pattern: str, value: str, *, ignore_case: bool, arn: bool, context: Context | None
) -> bool:
    """Glob-match `value` against `pattern`, substituting policy variables when `context` is given."""
    if pattern == "*":
        return True
    pieces: list[tuple[bool, str]] = []
    if context is None:
        pieces.append((False, pattern))
    else:
        pos = 0
        for m in _VARIABLE.finditer(pattern):
            pieces.append((False, pattern[pos : m.start()]))
            resolved = _resolve_variable(m.group(1), context)
            if resolved is None:
                return False
            pieces.append((True, resolved))
            pos = m.end()
        pieces.append((False, pattern[pos:]))
    regex = _glob_regex(tuple(pieces), ignore_case, arn and pattern.startswith("arn:"))
    return regex.fullmatch(value) is not None


def _parse_date(text: str) -> datetime | None:
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return datetime.fromtimestamp(float(text), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_ORDER = {
    "Equals": lambda a, b: a == b,
    "LessThan": lambda a, b: a < b,
    "LessThanEquals": lambda a, b: a <= b,
    "GreaterThan": lambda a, b: a > b,
    "GreaterThanEquals": lambda a, b: a >= b,
}


_FAMILY_PARSERS: dict[str, Any] = {}  # filled below: operator family -> parser of a policy value


def _policy_value(base: str, value: str) -> Any:
    """`value` parsed as operator `base` reads a policy value (a network, a number, a date, a boolean), or
    None when it cannot be one; values of the other operators are taken as they are."""
    family = _NEGATED.get(base, base)
    for prefix, parse in _FAMILY_PARSERS.items():
        if family.startswith(prefix):
            return parse(value)
    return value


def _parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address, an IPv4-mapped IPv6 one as its IPv4 address; None if `text` is none."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.0.0.1 is the IPv4 peer 10.0.0.1
    return mapped or address


def _one(base: str, actual: str, wanted: str, variables: Context | None) -> bool | None:
    """Does one context value satisfy positive operator `base` for one policy value? None = unsupported
    (an operator this module does not know, or a policy value it cannot read: both fail closed)."""
    if base in ("StringEquals", "StringEqualsIgnoreCase"):
        resolved = wanted if variables is None else _substitute(wanted, variables)
        if resolved is None:
            return False
        return actual.lower() == resolved.lower() if base.endswith("IgnoreCase") else actual == resolved
    if base in ("StringLike", "ArnEquals", "ArnLike"):
        # ArnEquals takes wildcards too: AWS documents it as behaving like ArnLike.
        arn = base.startswith("Arn")
        return _pattern_matches(wanted, actual, ignore_case=False, arn=arn, context=variables)
    if base == "Bool":
        return None if _parse_bool(wanted) is None else actual.lower() == wanted.lower()
    if base == "BinaryEquals":
        return actual == wanted
    if base == "IpAddress":
        network, address = _parse_network(wanted), parse_address(actual)
        if network is None:
            return None
        return address is not None and address.version == network.version and address in network
    for family, parse in (("Numeric", _parse_float), ("Date", _parse_date)):
        if base.startswith(family) and base[len(family) :] in _ORDER:
            a, b = parse(actual), parse(wanted)
            if b is None:
                return None
            return a is not None and bool(_ORDER[base[len(family) :]](a, b))
    return None


def _parse_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if value != value else value  # NaN compares with nothing


def _parse_bool(text: str) -> bool | None:
    return {"true": True, "false": False}.get(text.lower())


_FAMILY_PARSERS.update(IpAddress=_parse_network, Numeric=_parse_float, Date=_parse_date, Bool=_parse_bool)


def _substitute(text: str, context: Context) -> str | None:
    out = []
    pos = 0
    for m in _VARIABLE.finditer(text):
        resolved = _resolve_variable(m.group(1), context)
        if resolved is None:
            return None
        out.append(text[pos : m.start()] + resolved)
        pos = m.end()
    return "".join(out) + text[pos:]


def _condition_holds(
    operator: str, key: str, values: tuple[str, ...], context: Context, variables: Context | None
) -> bool | None:
    """Evaluate one (operator, key, values) entry; None when the operator is not supported."""
    if not _known_operator(operator):
        return None
    qualifier, base, if_exists = _split_operator(operator)
    actual = _lookup(context, key)
    if base == "Null":
        # "true" means the key must be absent.
        return any((actual is None) == (v.lower() == "true") for v in values)
    negated = base in _NEGATED
    positive = _NEGATED.get(base, base)

    def satisfies(item: str) -> bool:
        hit = False
        for wanted in values:
            result = _one(positive, item, wanted, variables)
            if result is None:
                raise _Unsupported
            hit = hit or result
        return not hit if negated else hit

    if actual is None:
        if qualifier == "ForAllValues":
            return True
        if qualifier == "ForAnyValue":
            return False
        return if_exists or negated
    try:
        if qualifier == "ForAllValues":
            return all(satisfies(item) for item in actual)
        if qualifier == "ForAnyValue" or not negated:
            return any(satisfies(item) for item in actual)
        return all(satisfies(item) for item in actual)
    except _Unsupported:
        return None


class _Unsupported(Exception):
    pass


def _statement_applies(st: Statement, action: str, resource: str, context: Context, version: str) -> bool:
    variables = context if version == "2012-10-17" else None
    action_hit = any(
        _pattern_matches(p, action, ignore_case=True, arn=False, context=None) for p in st.actions
    )
    if action_hit == st.not_action:
        return False
    resource_hit = any(
        _pattern_matches(p, resource, ignore_case=False, arn=True, context=variables) for p in st.resources
    )
    if resource_hit == st.not_resource:
        return False
    for operator, key, values in st.conditions:
        holds = _condition_holds(operator, key, values, context, variables)
        if holds is None:
            # Fail closed: an operator we cannot evaluate grants nothing and denies everything it could.
            return st.effect == "Deny"
        if not holds:
            return False
    return True


def evaluate(
    policies: Sequence[PolicyDocument | Mapping[str, Any] | str],
    action: str,
    resource: str,
    context: Context | None = None,
) -> Decision:
    """Evaluate the caller's identity policies for `action` ("service:Action") on `resource` (an ARN or
    ``*``). Dicts and JSON text are validated first (`MalformedPolicyDocument` if they are not valid)."""
    ctx: Context = context or {}
    allowed = False
    for policy in policies:
        doc = policy if isinstance(policy, PolicyDocument) else _compile_document(_load(policy), False)
        for st in doc.statements:
            if _statement_applies(st, action, resource, ctx, doc.version):
                if st.effect == "Deny":
                    return Decision.EXPLICIT_DENY
                allowed = True
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY


def access_denied_message(principal_arn: str, action: str, resource: str, decision: Decision) -> str:
    """AWS's AccessDeniedException message for a denied `decision`."""
    reason = (
        "with an explicit deny in an identity-based policy"
        if decision is Decision.EXPLICIT_DENY
        else f"because no identity-based policy allows the {action} action"
    )
    return f"User: {principal_arn} is not authorized to perform: {action} on resource: {resource} {reason}"
