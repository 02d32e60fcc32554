"""EC2's query protocol, driven by botocore's ``ec2`` model: form parameters in, XML out.

Input: ``Action=...&Version=...&InstanceId.1=i-...&Filter.1.Name=...&Filter.1.Value.1=...`` is decoded
into plain Python values keyed by the model's member names (exactly the inverse of botocore's
``EC2Serializer``: a member's wire name is its ``queryName``, else its capitalised ``locationName``, else
its member name; list items are ``Name.N``). Values are validated against the model (required members,
enums, integer ranges); a violation is an `Ec2ApiError` with EC2's code (MissingParameter,
InvalidParameterValue).

Output: a handler's dict (member names) becomes ``<ActionResponse xmlns=...><requestId/>...`` with each
member under its ``locationName`` and list items as ``<item>``, which is what botocore's
``EC2QueryParser`` reads. Errors are EC2's ``<Response><Errors><Error><Code/><Message/></Error></Errors>
<RequestID/></Response>``.
"""

from __future__ import annotations

import base64
import math
import re
from bisect import bisect_left
from datetime import UTC, datetime
from functools import cache
from typing import Any
from xml.sax.saxutils import escape

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from rehost import ids

API_VERSION = "2016-11-15"
#: The highest list index (``Name.N``) a request may use; EC2 itself caps its lists at 1,000 items.
MAX_LIST_INDEX = 1000
#: The most parameters a request may have (decoding is done on the event loop: it must stay short).
MAX_PARAMETERS = 5000
_INDEX = re.compile(r"[1-9][0-9]{0,3}")  # ASCII digits only: str.isdigit() is true for '²'
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_NUMBER = re.compile(r"-?[0-9]{1,40}(\.[0-9]{1,40})?([eE][-+]?[0-9]{1,3})?")
# Characters XML 1.0 does not allow, even escaped: C0 controls but tab/LF/CR, surrogates, U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
XMLNS = f"http://ec2.amazonaws.com/doc/{API_VERSION}/"


class Ec2ApiError(Exception):
    """An error answered to an EC2 client: EC2's error code, its message and the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@cache
def ec2_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("ec2")


def operation(action: str) -> OperationModel | None:
    """The model of ``action``, or None when EC2 has no such action."""
    model = ec2_model()
    if action not in model.operation_names:
        return None
    return model.operation_model(action)


# -- input ----------------------------------------------------------------------------------------------

def _wire_name(shape: Shape, default: str) -> str:
    ser = shape.serialization
    if "queryName" in ser:
        return str(ser["queryName"])
    if "name" in ser:
        name = str(ser["name"])
        return name[0].upper() + name[1:]
    return default


def parse_params(op: OperationModel, form: dict[str, str]) -> dict[str, Any]:
    """Decode the flat form parameters of ``op`` into member-named values and validate them."""
    shape = op.input_shape
    if shape is None:
        return {}
    if len(form) > MAX_PARAMETERS:
        raise Ec2ApiError("MalformedQueryString", f"A request may have at most {MAX_PARAMETERS} parameters.")
    keys = sorted(form)
    for key in keys:
        if _NOT_XML.search(form[key]):  # it could never be answered back in XML (nor stored in PostgreSQL)
            raise Ec2ApiError("InvalidParameterValue",
                              f"Value ({xml_text(form[key], 200)}) for parameter {xml_text(key, 100)} is invalid: "
                              "it holds characters XML does not allow.")
    value = _decode_structure(shape, form, keys, "")
    _check_required(shape, value, "")
    return value


def _under(keys: list[str], prefix: str) -> list[str]:
    """The keys (sorted) that start with ``prefix``, found by bisection: decoding stays O(n log n)."""
    return keys[bisect_left(keys, prefix):bisect_left(keys, prefix + "\U0010ffff")]


def _has_prefix(keys: list[str], prefix: str) -> bool:
    return bool(_under(keys, prefix))


def _decode(shape: Shape, form: dict[str, str], keys: list[str], key: str) -> Any:
    t = shape.type_name
    if t == "structure":
        return _decode_structure(shape, form, keys, key + ".")
    if t == "list":
        return [_decode(shape.member, form, keys, f"{key}.{i}")
                for i in _indices(keys, key, shape.member.type_name not in ("structure", "list", "map"))]
    if t == "map":
        out: dict[str, Any] = {}
        i = 1
        while f"{key}.{i}.key" in form or f"{key}.entry.{i}.key" in form:
            base = f"{key}.{i}" if f"{key}.{i}.key" in form else f"{key}.entry.{i}"
            out[form[base + ".key"]] = _decode(shape.value, form, keys, base + ".value")
            i += 1
        return out
    return _scalar(shape, form.get(key), key)


def _indices(keys: list[str], key: str, scalar: bool) -> list[int]:
    """The item numbers N of the list parameter ``key`` (``key.N``, or ``key.N.Sub`` unless its items are
    ``scalar``), in order."""
    found: set[int] = set()
    for k in _under(keys, key + "."):
        index, _, rest = k[len(key) + 1:].partition(".")
        if scalar and rest:
            raise Ec2ApiError("UnknownParameter", f"The parameter {xml_text(k, 100)} is not recognized")
        if not _INDEX.fullmatch(index) or int(index) > MAX_LIST_INDEX:
            raise Ec2ApiError("InvalidParameterValue",
                              f"The parameter {xml_text(k, 100)} is invalid: list items are numbered 1 to {MAX_LIST_INDEX}.")
        found.add(int(index))
    return sorted(found)


def _decode_structure(shape: Shape, form: dict[str, str], keys: list[str], prefix: str) -> dict[str, Any]:
    known = {_wire_name(member, name) for name, member in shape.members.items()}
    for k in _under(keys, prefix):
        if k[len(prefix):].split(".", 1)[0] not in known:
            raise Ec2ApiError("UnknownParameter", f"The parameter {xml_text(k, 100)} is not recognized")
    out: dict[str, Any] = {}
    for name, member in shape.members.items():
        key = prefix + _wire_name(member, name)
        if member.type_name in ("structure", "list", "map"):
            if _has_prefix(keys, key + "."):
                out[name] = _decode(member, form, keys, key)
            elif member.type_name == "list" and form.get(key) == "":
                out[name] = []  # the query protocol's empty list
        elif key in form:
            out[name] = _scalar(member, form[key], key)
    return out


def _scalar(shape: Shape, text: str | None, key: str) -> Any:
    if text is None:
        return None
    t = shape.type_name
    if t in ("integer", "long"):
        if not _INTEGER.fullmatch(text):
            raise invalid_value(key, text)
        value = int(text)
        md = shape.metadata
        if ("min" in md and value < md["min"]) or ("max" in md and value > md["max"]):
            raise invalid_value(key, text)
        return value
    if t == "boolean":
        if text.lower() not in ("true", "false"):
            raise invalid_value(key, text)
        return text.lower() == "true"
    if t in ("double", "float"):
        number = float(text) if _NUMBER.fullmatch(text) else math.inf
        if not math.isfinite(number):
            raise invalid_value(key, text)
        return number
    if t == "timestamp":  # kept as MGN-style ISO-8601 text, so that it can be stored as JSON
        try:
            when = ids.parse_iso(text)
            return ids.iso(when if when.tzinfo else when.replace(tzinfo=UTC))
        except (ValueError, OverflowError):
            raise invalid_value(key, text) from None
    if t == "blob":
        try:
            return base64.b64decode(text, validate=True)
        except ValueError:
            raise invalid_value(key, text) from None
    if shape.enum and text not in shape.enum:
        raise invalid_value(key, text)
    return text


def _check_required(shape: Shape, value: dict[str, Any], prefix: str) -> None:
    for name in shape.required_members:
        if value.get(name) in (None, [], {}):
            raise Ec2ApiError("MissingParameter", f"The request must contain the parameter {prefix}{name}")
    for name, item in value.items():
        member = shape.members[name]
        if member.type_name == "structure" and isinstance(item, dict):
            _check_required(member, item, f"{prefix}{name}.")
        elif member.type_name == "list" and member.member.type_name == "structure":
            for i, element in enumerate(item, 1):
                _check_required(member.member, element, f"{prefix}{name}.{i}.")


def invalid_value(key: str, text: str) -> Ec2ApiError:
    return Ec2ApiError("InvalidParameterValue", f"Value ({xml_text(text, 200)}) for parameter {xml_text(key, 100)} is invalid.")


def xml_text(text: str, limit: int | None = None) -> str:
    """``text`` fit for XML 1.0 character data: cut to ``limit`` characters, characters XML cannot carry
    written as ``\\xNN``/``\\uNNNN``. (Markup is escaped where the XML is written.)"""
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}" if m.group() < " " else f"\\u{ord(m.group()):04x}", text)


def _xml(value: Any) -> str:
    return escape(xml_text(str(value)))


# -- output ---------------------------------------------------------------------------------------------

def response_xml(op: OperationModel, result: dict[str, Any], request_id: str) -> bytes:
    """The XML body of a successful ``op`` whose member-named output is ``result``."""
    parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<{op.name}Response xmlns="{XMLNS}">',
             f"<requestId>{_xml(request_id)}</requestId>"]
    if op.output_shape is not None:
        parts.append(_structure_body(op.output_shape, result))
    parts.append(f"</{op.name}Response>")
    return "".join(parts).encode()


def _structure_body(shape: Shape, value: dict[str, Any]) -> str:
    out = []
    for name, member in shape.members.items():
        item = value.get(name)
        if item is None:
            continue
        tag = member.serialization.get("name", name)
        out.append(f"<{tag}>{_body(member, item)}</{tag}>")
    return "".join(out)


def _body(shape: Shape, value: Any) -> str:
    t = shape.type_name
    if t == "structure":
        return _structure_body(shape, value)
    if t == "list":
        tag = shape.member.serialization.get("name", "member")
        return "".join(f"<{tag}>{_body(shape.member, v)}</{tag}>" for v in value)
    if t == "map":
        return "".join(f"<entry><key>{_xml(k)}</key><value>{_body(shape.value, v)}</value></entry>"
                       for k, v in value.items())
    if t == "boolean":
        return "true" if value else "false"
    if t == "timestamp":
        if isinstance(value, datetime):
            return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        return _xml(value)
    if t == "blob":
        return base64.b64encode(value).decode()
    return _xml(value)


def error_xml(err: Ec2ApiError, request_id: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{_xml(err.code)}</Code>'
            f"<Message>{_xml(err.message)}</Message></Error></Errors>"
            f"<RequestID>{_xml(request_id)}</RequestID></Response>").encode()
