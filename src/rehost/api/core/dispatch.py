"""The one front door of MGN's operations, for the API and the console alike.

`MgnDispatcher.dispatch(identity, "StartTest", {"sourceServerIDs": [...]}, context)` does, in this order:
1. find the operation in botocore's model (UnknownOperationException) and its `MgnService` method
   ("not implemented" ValidationException when rehost has none);
2. validate the input against the operation's input shape (`rehost.api.core.model.validate`), so a value
   the model forbids is refused with the API's own ValidationException whoever sent it;
3. drop what the model does not declare (unknown members, at any depth, are ignored as AWS ignores them,
   so they never reach a service method as keyword arguments nor get stored), JSON nulls (absent) and
   ``accountID`` (rehost serves one account);
4. authorize ``mgn:<Operation>`` on every resource the input names (`resources_for`) with the request's
   context (`request_context`), the tags the request sets (``aws:RequestTag/<key>``, ``aws:TagKeys``) and,
   for each resource, its own tags (``aws:ResourceTag/<key>``): one denied resource refuses the whole
   request before anything runs;
5. refuse with UninitializedAccountException before InitializeService;
6. call the service, translating rehost's errors into MGN's error shapes once, here.

The MGN features rehost leaves out on purpose (network migration, connectors, vCenter clients, remote
source actions: `out_of_scope_reason`) are routed like the others, so a caller learns what any MGN
operation answers on an uninitialized account (IAM on ``mgn:<Operation>``, then UninitializedAccountException),
and then a ValidationException saying why rehost has no such thing; their input is not looked at.

Every failure is an `AwsError`; the API answers it as JSON, the console shows its message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from botocore.model import OperationModel

from rehost import errors
from rehost.api.auth.authorize import Authorizer, request_context, resources_for
from rehost.api.auth.sigv4 import VerifiedIdentity
from rehost.api.core.errors import AwsError, from_rehost_error, not_implemented, out_of_scope, uninitialized
from rehost.api.core.model import clean, service_model, validate
from rehost.db import repo

if TYPE_CHECKING:
    from rehost.api.mgn.service import MgnService

__all__ = ["MgnDispatcher", "request_context", "snake"]

Context = Mapping[str, str | Sequence[str]]


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake(name: str) -> str:
    """``StartTest`` -> ``start_test``: an operation's service method."""
    return _CAMEL.sub("_", name).lower()


def _tag_keys(call: Mapping[str, Any]) -> dict[str, str | list[str]]:
    """``aws:RequestTag/<key>`` for each tag the request sets, ``aws:TagKeys`` for the keys it names."""
    out: dict[str, str | list[str]] = {}
    tags = call.get("tags")
    if isinstance(tags, dict) and tags:
        out.update({f"aws:RequestTag/{key}": str(value) for key, value in tags.items()})
        out["aws:TagKeys"] = list(tags)
    elif isinstance(call.get("tagKeys"), list):  # UntagResource
        out["aws:TagKeys"] = [str(key) for key in call["tagKeys"]]
    return out


#: Operation-name markers of the MGN features rehost leaves out, and why.
OUT_OF_SCOPE: tuple[tuple[str, str], ...] = (
    ("NetworkMigration", "AWS MGN's network migration analyses and recreates AWS networks; rehost migrates servers "
                         "and launches them on its own targets, whose networks are set in launch templates."),
    ("ImportFileEnrichment", "import file enrichment belongs to MGN's network migration, which rehost does not "
                             "have; import inventory files with StartImport."),
    ("Connector", "MGN connectors install agents remotely; with rehost, install the agent on each source server "
                  "(the replication installer), so there are no connectors."),
    ("VcenterClient", "rehost has no agentless replication from vCenter; install the agent on each source server, "
                      "so there are no vCenter clients."),
    ("RemoteSourceAction", "remote source actions run through MGN connectors, which rehost does not have."),
)


def out_of_scope_reason(operation: str) -> str | None:
    """Why rehost leaves ``operation`` out, or None if it is not one of those left out on purpose."""
    return next((reason for marker, reason in OUT_OF_SCOPE if marker in operation), None)


class MgnDispatcher:
    """Validates, authorizes and runs MGN operations on one `MgnService` (see the module's docstring)."""

    def __init__(self, mgn: MgnService, authorizer: Authorizer) -> None:
        self.mgn = mgn
        self.authorizer = authorizer
        self.model = service_model("mgn")

    def operation(self, name: str) -> tuple[OperationModel, Callable[..., dict[str, Any]]]:
        """The operation's model and its service method; raises when either is missing."""
        if name not in self.model.operation_names:
            raise AwsError("UnknownOperationException", f"Unknown operation {name}", 404)
        method = getattr(self.mgn, snake(name), None)
        if method is None and out_of_scope_reason(name) is None:
            raise not_implemented(name)
        return self.model.operation_model(name), method or self._out_of_scope

    @staticmethod
    def _out_of_scope(**params: Any) -> dict[str, Any]:
        raise AssertionError("an operation out of rehost's scope is answered by dispatch")

    def resource_tags(self, resources: list[str]) -> dict[str, dict[str, str]]:
        """``aws:ResourceTag/<key>`` of each named resource, read in one transaction."""
        arns = [arn for arn in resources if arn != "*"]
        if not arns:
            return {}
        with self.mgn.store.read() as conn:
            tags = {arn: repo.get_tags(conn, arn) for arn in arns}
        return {arn: {f"aws:ResourceTag/{k}": v for k, v in found.items()} for arn, found in tags.items() if found}

    def dispatch(self, identity: VerifiedIdentity, operation: str, params: Mapping[str, Any],
                 context: Context | None = None) -> dict[str, Any]:
        """Run `operation` with `params` (the model's member names) as `identity`; raise `AwsError`."""
        op, method = self.operation(operation)
        reason = None if hasattr(self.mgn, snake(op.name)) else out_of_scope_reason(op.name)
        if reason is not None:
            self.authorizer.authorize(identity, f"mgn:{op.name}", ["*"], dict(context or {}), {})
            if not self.mgn.is_initialized():
                raise uninitialized()
            raise out_of_scope(op.name, reason)
        shape = op.input_shape
        call: dict[str, Any] = {}
        if shape is not None:
            given = dict(params)
            validate(shape, given, "")
            call = clean(shape, given)
            call.pop("accountID", None)
        resources = resources_for(self.mgn.account.arn(""), call)
        self.authorizer.authorize(identity, f"mgn:{op.name}", resources, {**(context or {}), **_tag_keys(call)},
                                  self.resource_tags(resources))
        if op.name != "InitializeService" and not self.mgn.is_initialized():
            raise uninitialized()
        try:
            return method(**call) or {}
        except errors.RehostError as exc:
            raise from_rehost_error(exc) from exc
