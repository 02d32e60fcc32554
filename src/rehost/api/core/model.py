"""Routing, input parsing and validation, and output serialization driven by botocore's service models.

botocore's model is the single source of truth for the wire format: the operations' HTTP method and URI,
where each input member lives (URI, query string, header, JSON body), the constraints on every value
(required, length, range, enum, pattern), and the output shapes. Handlers receive plain Python values
keyed by the model's member names and return plain dicts; this module turns them into exactly what
botocore's parsers expect.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qs, unquote

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from rehost import ids
from rehost.api.core.errors import AwsError, validation_error

log = logging.getLogger("rehost.api.model")

#: The largest request body either JSON API (MGN's, the agent's) reads; a bigger one is cannotParse.
#: The largest legitimate bodies are an agent's log batch and a SourceProperties with 1,000 disks.
MAX_BODY_BYTES = 2 * 1024 * 1024
#: The deepest nesting of objects and arrays a request may have: MGN's deepest input shape nests 7 deep.
MAX_DEPTH = 32
#: The most digits an integer literal may have (int64 has 19, and a sign).
MAX_INT_DIGITS = 20
INT_RANGES = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_SURROGATE_OR_NUL = re.compile("[\ud800-\udfff\x00]")
# In JSON text: a string literal; an escaped NUL or surrogate (after an even run of backslashes); a run
# of digits too long for int64; brackets nested one level deep (removed round after round).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_RISKY_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_LONG_DIGITS = re.compile(rf"(?<![0-9.eE+])[0-9]{{{MAX_INT_DIGITS + 1},}}(?![0-9.eE])")
_INNERMOST = re.compile(r"\[\]|\{\}")
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class _Unparsable(ValueError):
    pass


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unparsable(f"number {text[:40]} is out of range")
    return value


def _parse_constant(name: str) -> Any:
    raise _Unparsable(f"{name} is not a JSON number")


def _check_text(text: str, max_depth: int) -> None:
    """The checks of a document json.loads accepted, done on its text at C speed (a hostile body of a
    million items must not hold the event loop): nesting, integer literal length, NUL and surrogates."""
    bare = _JSON_STRING.sub('""', text)  # the text is valid JSON: every quote opens a closed string
    if _LONG_DIGITS.search(bare):
        raise _Unparsable(f"an integer literal longer than {MAX_INT_DIGITS} digits")
    brackets = _NOT_BRACKET.sub("", bare)
    for _ in range(max_depth):
        if not brackets:
            break
        brackets = _INNERMOST.sub("", brackets)
    if brackets:
        raise _Unparsable(f"nesting deeper than {max_depth}")


def _check_strings(value: Any) -> None:
    """No string (key or value) holds NUL or a lone surrogate; only when the text escapes one of them."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE_OR_NUL.search(item):
                raise _Unparsable("a string holds a lone surrogate or NUL")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def parse_json(body: bytes, *, max_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The one JSON parser of the APIs: strict UTF-8 JSON, or ValidationException (reason cannotParse).

    Refused: bodies over ``max_bytes``, NaN/Infinity and numbers that overflow a double, integer literals
    longer than int64's, lone surrogates and NUL in strings (no database or encoder takes them), and
    objects/arrays nested deeper than ``max_depth``."""
    if len(body) > max_bytes:
        raise validation_error(f"Request body is larger than {max_bytes} bytes", reason="cannotParse")
    try:
        text = body.decode("utf-8")
        loaded = json.loads(text, parse_float=_parse_float, parse_constant=_parse_constant)
        _check_text(text, max_depth)
        if _RISKY_ESCAPE.search(text):  # an escaped surrogate pair is fine: only a lone one is refused
            _check_strings(loaded)
    except RecursionError:
        raise validation_error(f"Could not parse request body: nesting deeper than {max_depth}",
                               reason="cannotParse") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError and _Unparsable are ValueErrors
        raise validation_error(f"Could not parse request body: {_printable(str(exc))}", reason="cannotParse") from None
    return loaded


async def read_body(chunks: AsyncIterator[bytes], max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """A request body read from its stream, stopping at ``max_bytes``: a bigger one is cannotParse and is
    never held in memory whole."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise validation_error(f"Request body is larger than {max_bytes} bytes", reason="cannotParse")
        parts.append(chunk)
    return b"".join(parts)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object; an empty body is ``{}``."""
    if not body.strip():
        return {}
    loaded = parse_json(body)
    if not isinstance(loaded, dict):
        raise validation_error("Request body must be a JSON object", reason="cannotParse")
    return loaded


def _printable(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters with anything not printable ASCII escaped, for messages."""
    return text[:limit].encode("ascii", "backslashreplace").decode("ascii")


@cache
def service_model(name: str) -> ServiceModel:
    return botocore.session.get_session().get_service_model(name)


@dataclass(frozen=True)
class Route:
    operation: OperationModel
    method: str
    pattern: re.Pattern[str]
    labels: tuple[str, ...]


def _compile_uri(uri: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    path = uri.split("?", 1)[0]
    labels: list[str] = []
    regex = ""
    for part in re.split(r"(\{[^}]+\})", path):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            greedy = name.endswith("+")
            name = name.rstrip("+")
            labels.append(name)
            regex += f"(?P<{name}>.+)" if greedy else f"(?P<{name}>[^/]+)"
        else:
            regex += re.escape(part)
    return re.compile(f"^{regex}$"), tuple(labels)


class RestJsonService:
    """A rest-json service served from its botocore model: MGN's (by name), or the agent API's.

    ``reject_unknown``: a member the model does not declare is a ValidationException instead of being
    dropped (the agent API, whose one client is rehost's own agent)."""

    def __init__(self, name: str | ServiceModel, *, reject_unknown: bool = False) -> None:
        self.model = service_model(name) if isinstance(name, str) else name
        self.reject_unknown = reject_unknown
        self.routes: list[Route] = []
        for op_name in self.model.operation_names:
            op = self.model.operation_model(op_name)
            pattern, labels = _compile_uri(op.http["requestUri"])
            self.routes.append(Route(op, op.http["method"], pattern, labels))
        # Literal paths before templated ones so /tags/{arn} never shadows a fixed path.
        self.routes.sort(key=lambda r: len(r.labels))

    def match(self, method: str, raw_path: str) -> tuple[OperationModel, dict[str, str]] | None:
        for route in self.routes:
            if route.method != method:
                continue
            m = route.pattern.match(raw_path)
            if m:
                return route.operation, {k: unquote(v) for k, v in m.groupdict().items()}
        return None

    def path_exists(self, raw_path: str) -> bool:
        return any(route.pattern.match(raw_path) for route in self.routes)

    def parse_input(self, op: OperationModel, labels: dict[str, str], query: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """The operation's input members from the URI, query string, headers and JSON body, not yet validated
        (`check_input` does that; for MGN, `rehost.api.core.dispatch.MgnDispatcher` does)."""
        shape = op.input_shape
        if shape is None:
            return {}
        # Only body members come from the body: a URI, query or header member there is not the caller's to set.
        params: dict[str, Any] = {k: v for k, v in parse_json_object(body).items()
                                  if k not in shape.members or not shape.members[k].serialization.get("location")}
        qs = parse_qs(query, keep_blank_values=True)
        for name, member in shape.members.items():
            loc = member.serialization.get("location")
            wire = member.serialization.get("name", name)
            if loc == "uri" and wire in labels:
                params[name] = labels[wire]
            elif loc == "querystring" and wire in qs:
                values = qs[wire]
                params[name] = values if member.type_name == "list" else _coerce_scalar(member, values[-1], name)
            elif loc == "header" and wire.lower() in headers:
                params[name] = headers[wire.lower()]
        return params

    def check_input(self, op: OperationModel, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` validated against the operation's input shape, with what it does not declare removed
        (refused instead, with ``reject_unknown``)."""
        shape = op.input_shape
        if shape is None:
            return {}
        validate(shape, params, "", reject_unknown=self.reject_unknown)
        return dict(clean(shape, params))

    def serialize_output(self, op: OperationModel, result: dict[str, Any] | None) -> tuple[int, bytes]:
        status = int(op.http.get("responseCode", 200))
        shape = op.output_shape
        if status == 204:
            return status, b""
        if shape is None or result is None:
            return status, b"{}"
        body = serialize(shape, result)
        return status, json.dumps(body, separators=(",", ":")).encode()

    def error_parts(self, err: AwsError) -> tuple[bytes, dict[str, str]]:
        """The JSON body and the extra headers of an error: members the model places in headers go there."""
        body: dict[str, Any] = {"message": err.message}
        headers: dict[str, str] = {}
        shape = self._error_shape(err.code)
        for key, value in err.fields.items():
            member = shape.members.get(key) if shape is not None else None
            if shape is not None and member is None:
                continue
            if member is not None and member.serialization.get("location") == "header":
                headers[member.serialization.get("name", key)] = str(value)
            else:
                body[key] = serialize(member, value) if member is not None else value
        return json.dumps(body, separators=(",", ":")).encode(), headers

    def _error_shape(self, code: str) -> Shape | None:
        try:
            return self.model.shape_for(code)
        except Exception:  # botocore raises NoShapeFoundError for codes outside the model (SigV4 errors)
            return None


_QUERY_INT = re.compile(r"-?[0-9]{1,19}")


def _coerce_scalar(shape: Shape, text: str, path: str) -> Any:
    if shape.type_name in ("integer", "long"):
        if not _QUERY_INT.fullmatch(text):
            raise _fail(path, "Member must be an integer")
        return int(text)
    if shape.type_name == "boolean":
        if text.lower() not in ("true", "false"):
            raise _fail(path, "Member must be a boolean")
        return text.lower() == "true"
    return text


def _fail(path: str, message: str) -> AwsError:
    name = _printable(path or "body")
    return validation_error(f"1 validation error detected: Value at '{name}' failed to satisfy constraint: {message}",
                            fields=[{"name": name, "message": message}])


def validate(shape: Shape, value: Any, path: str, *, reject_unknown: bool = False) -> None:
    """Check ``value`` against ``shape`` as MGN does, at any depth; raise ValidationException naming the field.

    A null member of a structure counts as absent. Unknown members are ignored, as AWS services do (`clean`
    then drops them), unless ``reject_unknown`` (the agent API, whose only client is rehost's own agent)."""
    t = shape.type_name
    md = shape.metadata
    if t == "structure":
        if not isinstance(value, dict):
            raise _fail(path, "Member must be an object")
        for req in shape.required_members:
            if value.get(req) is None:
                raise _fail(_join(path, req), "Member must not be null")
        for key, item in value.items():
            member = shape.members.get(key)
            if member is None and reject_unknown:
                raise _fail(_join(path, str(key)), "Member is not part of the request")
            if member is None or item is None:
                continue  # unknown members are ignored, as AWS services do
            validate(member, item, _join(path, key), reject_unknown=reject_unknown)
    elif t == "list":
        if not isinstance(value, list):
            raise _fail(path, "Member must be a list")
        _check_len(path, len(value), md, "length")
        for i, item in enumerate(value):
            validate(shape.member, item, f"{path}[{i}]", reject_unknown=reject_unknown)
    elif t == "map":
        if not isinstance(value, dict):
            raise _fail(path, "Member must be a map")
        _check_len(path, len(value), md, "length")
        for k, v in value.items():
            validate(shape.key, k, f"{path}.key", reject_unknown=reject_unknown)
            validate(shape.value, v, f"{path}[{k}]", reject_unknown=reject_unknown)
    elif t == "string":
        if not isinstance(value, str):
            raise _fail(path, "Member must be a string")
        _check_len(path, len(value), md, "length")
        if shape.enum and value not in shape.enum:
            raise _fail(path, f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
        pattern = md.get("pattern")
        if pattern and not _pattern(pattern).search(value):
            raise _fail(path, f"Member must satisfy regular expression pattern: {pattern}")
    elif t in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, "Member must be an integer")
        low, high = INT_RANGES[t]
        if "min" in md and value < md["min"]:
            raise _fail(path, f"Member must have value greater than or equal to {md['min']}")
        if "max" in md and value > md["max"]:
            raise _fail(path, f"Member must have value less than or equal to {md['max']}")
        if not low <= value <= high:
            raise _fail(path, f"Member must be a {t} between {low} and {high}")
    elif t in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            raise _fail(path, "Member must be a number")
        if "min" in md and value < md["min"]:
            raise _fail(path, f"Member must have value greater than or equal to {md['min']}")
        if "max" in md and value > md["max"]:
            raise _fail(path, f"Member must have value less than or equal to {md['max']}")
    elif t == "boolean":
        if not isinstance(value, bool):
            raise _fail(path, "Member must be a boolean")
    elif t == "timestamp":
        if shape.serialization.get("timestampFormat") == "iso8601":
            if not isinstance(value, str) or _timestamp(value) is None:
                raise _fail(path, "Member must be an ISO-8601 date and time with its offset")
        elif _timestamp(value) is None:
            raise _fail(path, "Member must be a timestamp (ISO-8601 with its offset, or seconds since the epoch)")
    elif t == "blob":
        if not isinstance(value, str):
            raise _fail(path, "Member must be a base64 string")


def _finite(value: float) -> bool:
    """A finite double (an int too big for one is not: math.isfinite would raise)."""
    return -(2**1023) < value < 2**1023 if isinstance(value, int) else math.isfinite(value)


def _timestamp(value: Any, *, offset_required: bool = True) -> datetime | None:
    """``value`` as a datetime when it is a valid timestamp (datetime, epoch seconds, ISO-8601 with an
    offset, or without one unless ``offset_required``: an input's local time of an unknown zone is
    not comparable with any other)."""
    try:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, tz=UTC) if _finite(value) else None
        if isinstance(value, str) and 10 <= len(value) <= 40:
            parsed = ids.parse_iso(value)
            return parsed if parsed.tzinfo or not offset_required else None
    except (ValueError, OverflowError, OSError):
        return None
    return None


def clean(shape: Shape, value: Any) -> Any:
    """A validated ``value`` with what ``shape`` does not declare removed, at every depth: unknown members
    and null members of structures. What reaches a service is exactly the model's members."""
    t = shape.type_name
    if t == "structure" and isinstance(value, dict):
        return {k: clean(shape.members[k], v) for k, v in value.items() if k in shape.members and v is not None}
    if t == "list" and isinstance(value, list):
        return [clean(shape.member, v) for v in value]
    if t == "map" and isinstance(value, dict):
        return {k: clean(shape.value, v) for k, v in value.items()}
    return value


def _check_len(path: str, length: int, md: dict[str, Any], what: str) -> None:
    if "min" in md and length < md["min"]:
        raise _fail(path, f"Member must have {what} greater than or equal to {md['min']}")
    if "max" in md and length > md["max"]:
        raise _fail(path, f"Member must have {what} less than or equal to {md['max']}")


@cache
def _pattern(pattern: str) -> re.Pattern[str]:
    # AWS patterns are anchored by ^...$ when they mean it; Java-style classes are Python-compatible here.
    return re.compile(pattern)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Malformed(ValueError):
    """A stored value that does not fit its output shape."""


def serialize(shape: Shape, value: Any, path: str = "", *, wire: bool = True) -> Any:
    """Keep only what the output shape declares; format timestamps the way rest-json parsers read them.

    A stored value that does not fit its shape (a string where a number belongs, an unreadable date, a
    structure that is not an object) is logged and left out, with the member or list item holding it, so
    one bad record never turns a whole answer into a fault. ``wire=False`` (`sanitize`) keeps member
    names, members the wire carries outside the body, and timestamps as they are."""
    try:
        return _serialize(shape, value, path or shape.name, wire)
    except _Malformed as exc:
        log.warning("left out of an answer: %s", exc)
        return None


def sanitize(shape: Shape, value: Any) -> Any:
    """An operation's result for Python callers (the console): what `serialize` would answer, in the
    service's own terms, plus the service's private members (``_name``) as they are. Whatever a page reads
    from it under a model member's name has the type the model declares."""
    return serialize(shape, value, wire=False)


def _serialize(shape: Shape, value: Any, path: str, wire: bool) -> Any:
    t = shape.type_name
    if value is None:
        return None
    if t == "structure":
        if not isinstance(value, dict):
            raise _Malformed(f"{path}: {type(value).__name__} where an object belongs")
        out: dict[str, Any] = {}
        for name, member in shape.members.items():
            if name in value and value[name] is not None:
                if wire and member.serialization.get("location"):
                    continue
                item = serialize(member, value[name], f"{path}.{name}", wire=wire)
                if item is not None:
                    out[member.serialization.get("name", name) if wire else name] = item
        if not wire:
            out.update((k, v) for k, v in value.items() if isinstance(k, str) and k.startswith("_"))
        return out
    if t == "list":
        if not isinstance(value, list):
            raise _Malformed(f"{path}: {type(value).__name__} where a list belongs")
        items = (serialize(shape.member, v, f"{path}[{i}]", wire=wire) for i, v in enumerate(value))
        return [v for v in items if v is not None]
    if t == "map":
        if not isinstance(value, dict):
            raise _Malformed(f"{path}: {type(value).__name__} where a map belongs")
        pairs = ((str(k), serialize(shape.value, v, f"{path}[{k}]", wire=wire)) for k, v in value.items())
        return {k: v for k, v in pairs if v is not None}
    if t == "timestamp":
        when = _timestamp(value, offset_required=False)
        if when is None:
            raise _Malformed(f"{path}: {str(value)[:40]!r} is not a timestamp")
        return when.timestamp() if wire and isinstance(value, datetime) else value
    if t == "string" and not isinstance(value, str):
        raise _Malformed(f"{path}: {type(value).__name__} where a string belongs")
    if t in ("integer", "long") and (isinstance(value, bool) or not isinstance(value, int)):
        raise _Malformed(f"{path}: {type(value).__name__} where an integer belongs")
    if t in ("double", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))
                                     or not _finite(value)):
        raise _Malformed(f"{path}: {value!r} where a number belongs")
    if t == "boolean" and not isinstance(value, bool):
        raise _Malformed(f"{path}: {type(value).__name__} where a boolean belongs")
    return value
