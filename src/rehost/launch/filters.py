"""EC2's Describe* conveniences shared by the launch template and instance operations: filters, paging."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any

from rehost.db import repo
from rehost.launch import errors as e


def matches(doc: Mapping[str, Any], filters: list[dict[str, Any]] | None,
             fields: Mapping[str, Callable[[Any], list[str]]]) -> bool:
    """EC2 filter semantics: every filter must match; a filter matches if any value does (``*``, ``?``
    wildcards). ``tag:KEY`` and ``tag-key`` work on every resource with Tags."""
    for flt in filters or []:
        name, wanted = flt.get("Name", ""), flt.get("Values") or []
        if name.startswith("tag:"):
            have = [t.get("Value", "") for t in tags_of(doc) if t["Key"] == name[4:]]
        elif name == "tag-key":
            have = [t["Key"] for t in tags_of(doc)]
        elif name in fields:
            have = fields[name](doc)
        else:
            raise e.invalid_value("Filter", name, f"The filter '{name}' is invalid")
        if not any(fnmatch.fnmatchcase(h, w) for h in have for w in wanted):
            return False
    return True


def tags_of(doc: Mapping[str, Any]) -> list[dict[str, str]]:
    tags = doc.get("Tags") or []
    if isinstance(tags, dict):
        return [{"Key": k, "Value": v} for k, v in tags.items()]
    return list(tags)


def paginate(items: list[Any], max_results: int | None, token: str | None) -> tuple[list[Any], str | None]:
    start = repo.decode_token(token) or 0
    if max_results is None:
        return items[start:], None
    if not 1 <= max_results <= 1000:
        raise e.invalid_value("MaxResults", max_results)
    end = start + max_results
    return items[start:end], repo.encode_token(end) if end < len(items) else None
