"""Checks an agent API request body before it reaches `AgentService`, so a malformed body is a
ValidationException naming the field, never an InternalServerException.

Top-level members are checked against the service method's own type hints (the agent API has no botocore
model); members that carry MGN shapes (``sourceProperties``, ``replicatedDisks``, ``error``) are checked
against those shapes in MGN's model, as the public API's inputs are.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Any

from rehost.api.core.errors import AwsError, validation_error
from rehost.api.core.model import service_model, validate

# Members whose values are MGN shapes: (shape name, whether the value is a list of that shape).
_MGN_SHAPES: dict[str, tuple[str, bool]] = {
    "sourceProperties": ("SourceProperties", False),
    "replicatedDisks": ("DataReplicationInfoReplicatedDisk", True),
    "error": ("DataReplicationError", False),
    "devices": ("Disk", True),  # {deviceName, bytes} as MGN's Disk; isBoot is rehost's own
}


@cache
def _hints(method: Callable[..., Any]) -> dict[str, Any]:
    func = getattr(method, "__func__", method)
    hints = typing.get_type_hints(func)
    hints.pop("return", None)
    return hints


def _fail(path: str, message: str) -> AwsError:
    return validation_error(f"{path}: {message}", fields=[{"name": path, "message": message}])


def _check(hint: Any, value: Any, path: str) -> None:
    if hint is Any:
        return
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return
        errors: list[AwsError] = []
        for option in options:
            if option is type(None):
                continue
            try:
                _check(option, value, path)
                return
            except AwsError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is list:
        if not isinstance(value, list):
            raise _fail(path, "must be a list")
        (item,) = typing.get_args(hint) or (Any,)
        for i, v in enumerate(value):
            _check(item, v, f"{path}[{i}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(path, "must be an object")
        _, item = typing.get_args(hint) or (str, Any)
        for k, v in value.items():
            _check(item, v, f"{path}.{k}")
        return
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(hint, type):
        ok = isinstance(value, hint)
    else:  # a hint this checker does not know: the service checks it
        ok = True
    if not ok:
        raise _fail(path, f"must be of type {getattr(hint, '__name__', hint)}")


def check_agent_params(action: str, method: Callable[..., Any], params: dict[str, Any]) -> None:
    """Raise ValidationException for a missing, unknown or mistyped member of ``action``'s body."""
    signature = inspect.signature(method)
    accepts_more = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    hints = _hints(method)
    for name, param in signature.parameters.items():
        if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if name not in params:
            if param.default is inspect.Parameter.empty:
                raise _fail(name, f"is required by {action}")
            continue
        _check(hints.get(name, Any), params[name], name)
        shape = _MGN_SHAPES.get(name)
        if shape is not None and params[name] is not None:
            model_shape = service_model("mgn").shape_for(shape[0])
            for i, item in enumerate(params[name] if shape[1] else [params[name]]):
                validate(model_shape, item, f"{name}[{i}]" if shape[1] else name)
    if not accepts_more:
        unknown = sorted(set(params) - set(signature.parameters))
        if unknown:
            raise _fail(unknown[0], f"is not a member of {action}")
