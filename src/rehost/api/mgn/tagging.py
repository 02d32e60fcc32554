"""Tags: TagResource, UntagResource, ListTagsForResource on every resource rehost keeps an ARN for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from rehost.api.mgn.grouping import APPLICATION, WAVE, GroupOps
from rehost.db import repo
from rehost.errors import InvalidInput, NotFound


class TagOps(GroupOps):
    """Mixin of `MgnService`: the tag operations, named after them."""

    def _require_resource(self, conn: Connection, arn: str) -> None:
        prefix = self.account.arn("")
        if not arn.startswith(prefix) or "/" not in arn[len(prefix):]:
            raise NotFound(f"Resource {arn} not found.", resource_id=arn)
        rtype, rid = arn[len(prefix):].split("/", 1)
        loaders: dict[str, Callable[[], Any]] = {
            "source-server": lambda: repo.load_server(conn, rid),
            "job": lambda: repo.load_job(conn, rid),
            "replication-configuration-template": lambda: repo.load_template(conn, "replication", rid),
            "launch-configuration-template": lambda: repo.load_template(conn, "launch", rid),
            "application": lambda: self._load_group(conn, APPLICATION, rid),
            "wave": lambda: self._load_group(conn, WAVE, rid),
            "import": lambda: _require_doc(conn, "mgn-import", rid),
            "export": lambda: _require_doc(conn, "mgn-export", rid),
        }
        if rtype not in loaders:
            raise NotFound(f"Resource {arn} not found.", resource_id=arn)
        try:
            loaders[rtype]()
        except NotFound as exc:
            raise NotFound(f"Resource {arn} not found.", resource_id=arn) from exc

    def tag_resource(self, resourceArn: str, tags: dict[str, str]) -> dict[str, Any]:
        with self.store.transaction() as conn:
            self._require_resource(conn, resourceArn)
            merged = {**repo.get_tags(conn, resourceArn), **tags}
            if len(merged) > 50:
                raise InvalidInput("A resource can have at most 50 tags.")
            repo.put_tags(conn, resourceArn, tags)
        return {}

    def untag_resource(self, resourceArn: str, tagKeys: list[str]) -> dict[str, Any]:
        with self.store.transaction() as conn:
            self._require_resource(conn, resourceArn)
            repo.remove_tags(conn, resourceArn, tagKeys)
        return {}

    def list_tags_for_resource(self, resourceArn: str) -> dict[str, Any]:
        with self.store.read() as conn:
            self._require_resource(conn, resourceArn)
            return {"tags": repo.get_tags(conn, resourceArn)}


def _require_doc(conn: Connection, kind: str, doc_id: str) -> None:
    if repo.load_doc(conn, kind, doc_id) is None:
        raise NotFound(f"{doc_id} not found.", resource_id=doc_id)
