"""Routing, input parsing and validation, and output serialization driven by botocore's service models.

botocore's model is the single source of truth for the wire format: the operations' HTTP method and URI,
where each input member lives (URI, query string, header, JSON body), the constraints on every value
(required, length, range, enum, pattern), and the output shapes. Handlers receive plain Python values
keyed by the model's member names and return plain dicts; this module turns them into exactly what
botocore's parsers expect.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qs, unquote

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from rehost.api.core.errors import AwsError, validation_error


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
    """A rest-json service (MGN) served from its botocore model."""

    def __init__(self, name: str) -> None:
        self.model = service_model(name)
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
        shape = op.input_shape
        if shape is None:
            return {}
        params: dict[str, Any] = {}
        if body.strip():
            try:
                loaded = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise validation_error(f"Could not parse request body: {exc}", reason="cannotParse") from exc
            if not isinstance(loaded, dict):
                raise validation_error("Request body must be a JSON object", reason="cannotParse")
            params.update(loaded)
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
        validate(shape, params, "")
        return params

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


def _coerce_scalar(shape: Shape, text: str, path: str) -> Any:
    if shape.type_name in ("integer", "long"):
        try:
            return int(text)
        except ValueError:
            raise validation_error(f"{path}: {text!r} is not an integer", fields=[{"name": path, "message": "not an integer"}]) from None
    if shape.type_name == "boolean":
        return text.lower() == "true"
    return text


def _fail(path: str, message: str) -> AwsError:
    name = path or "body"
    return validation_error(f"1 validation error detected: Value at '{name}' failed to satisfy constraint: {message}",
                            fields=[{"name": name, "message": message}])


def validate(shape: Shape, value: Any, path: str) -> None:
    """Check ``value`` against ``shape`` as MGN does; raise ValidationException naming the field."""
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
            if member is None or item is None:
                continue  # unknown members are ignored, as AWS services do
            validate(member, item, _join(path, key))
    elif t == "list":
        if not isinstance(value, list):
            raise _fail(path, "Member must be a list")
        _check_len(path, len(value), md, "length")
        for i, item in enumerate(value):
            validate(shape.member, item, f"{path}[{i}]")
    elif t == "map":
        if not isinstance(value, dict):
            raise _fail(path, "Member must be a map")
        _check_len(path, len(value), md, "length")
        for k, v in value.items():
            validate(shape.key, k, f"{path}.key")
            validate(shape.value, v, f"{path}[{k}]")
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
        if "min" in md and value < md["min"]:
            raise _fail(path, f"Member must have value greater than or equal to {md['min']}")
        if "max" in md and value > md["max"]:
            raise _fail(path, f"Member must have value less than or equal to {md['max']}")
    elif t in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, "Member must be a number")
    elif t == "boolean":
        if not isinstance(value, bool):
            raise _fail(path, "Member must be a boolean")
    elif t == "timestamp":
        if not isinstance(value, (int, float, str)):
            raise _fail(path, "Member must be a timestamp")


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


def serialize(shape: Shape, value: Any) -> Any:
    """Keep only what the output shape declares; format timestamps the way rest-json parsers read them."""
    t = shape.type_name
    if value is None:
        return None
    if t == "structure":
        out: dict[str, Any] = {}
        for name, member in shape.members.items():
            if name in value and value[name] is not None:
                if member.serialization.get("location"):
                    continue
                out[member.serialization.get("name", name)] = serialize(member, value[name])
        return out
    if t == "list":
        return [serialize(shape.member, v) for v in value]
    if t == "map":
        return {k: serialize(shape.value, v) for k, v in value.items()}
    if t == "timestamp":
        if isinstance(value, datetime):
            return value.astimezone(UTC).timestamp()
        return value
    return value
