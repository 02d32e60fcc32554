"""``POST /`` with a form body: the EC2 subset (query protocol), SigV4 service ``ec2``, IAM actions ``ec2:*``.

Order of checks, as EC2 answers them: signature (AuthFailure), Action and Version (InvalidAction,
MissingAction, MissingParameter), parameters (MissingParameter, InvalidParameterValue), IAM
(UnauthorizedOperation), DryRun (DryRunOperation), then the operation and its own errors.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from rehost import errors, ids
from rehost.api.auth.authorize import Authorizer, request_context
from rehost.api.core.errors import AwsError
from rehost.api.core.model import read_body
from rehost.api.ec2.protocol import Ec2ApiError, error_xml, operation, parse_params, response_xml
from rehost.launch.describe import HostFacts
from rehost.launch.service import Ec2Service

log = logging.getLogger("rehost.api.ec2")

#: The EC2 operations rehost serves, and the Ec2Service method of each.
OPERATIONS = {
    "CreateLaunchTemplateVersion": "create_launch_template_version",
    "ModifyLaunchTemplate": "modify_launch_template",
    "DescribeLaunchTemplates": "describe_launch_templates",
    "DescribeLaunchTemplateVersions": "describe_launch_template_versions",
    "DescribeInstances": "describe_instances",
    "TerminateInstances": "terminate_instances",
    "GetConsoleOutput": "get_console_output",
    "DescribeSecurityGroups": "describe_security_groups",
    "DescribeSubnets": "describe_subnets",
    "DescribeAvailabilityZones": "describe_availability_zones",
    "DescribeVpcs": "describe_vpcs",
    "DescribeInstanceTypes": "describe_instance_types",
}
#: Those answered from rehost's own facts (`rehost.launch.describe.HostFacts`), not from its records.
HOST_FACTS = {"DescribeSubnets", "DescribeVpcs", "DescribeInstanceTypes", "DescribeAvailabilityZones"}

# Sigv4's codes -> EC2's: EC2 answers AuthFailure (401) for any credential it cannot validate.
_AUTH_CODES = {"IncompleteSignatureException": ("IncompleteSignature", 400)}


class Ec2Api:
    """The ``root_post`` handler of `rehost.api.app.build_app` for EC2 query requests."""

    def __init__(self, ec2: Ec2Service, authorizer: Authorizer) -> None:
        self.ec2 = ec2
        self.facts = HostFacts(ec2.account, ec2.target)
        self.authorizer = authorizer

    async def __call__(self, request: Request) -> Response:
        request_id = ids.new_id("req")
        try:
            try:
                body = await read_body(request.stream())
            except AwsError as err:
                raise Ec2ApiError("MalformedQueryString", err.message) from err
            result_op, result = await self._handle(request, body)
            return Response(response_xml(result_op, result, request_id), media_type="text/xml")
        except Ec2ApiError as err:
            return _error(err, request_id)
        except Exception:
            log.exception("internal error in an EC2 request")
            return _error(Ec2ApiError("InternalError", "An internal error has occurred", 500), request_id)

    async def _handle(self, request: Request, body: bytes) -> tuple[Any, dict[str, Any]]:
        try:
            identity = await run_in_threadpool(
                self.authorizer.authenticate, method=request.method,
                raw_path=request.scope.get("raw_path", b"/").decode("latin-1").split("?", 1)[0],
                query_string=request.scope.get("query_string", b"").decode("latin-1"),
                headers=request.scope["headers"], body=body, service="ec2", now=ids.utcnow())
        except AwsError as err:
            code, status = _AUTH_CODES.get(err.code, ("AuthFailure", 401))
            raise Ec2ApiError(code, err.message, status) from err
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError as exc:
            raise Ec2ApiError("MalformedQueryString", "The request body is not UTF-8.") from exc
        action = form.pop("Action", None)
        if not action:
            raise Ec2ApiError("MissingAction", "The request must contain the parameter Action")
        op = operation(action)
        if op is None or action not in OPERATIONS:
            raise Ec2ApiError("InvalidAction", f"The action {action} is not valid for this web service.")
        if not form.pop("Version", None):
            raise Ec2ApiError("MissingParameter", "The request must contain the parameter Version")
        params = parse_params(op, form)
        try:
            await run_in_threadpool(self.authorizer.authorize, identity, f"ec2:{action}", self._resources(params),
                                    request_context(request, identity))
        except AwsError as err:
            raise Ec2ApiError("UnauthorizedOperation",
                              f"You are not authorized to perform this operation. {err.message}", 403) from err
        if params.pop("DryRun", False):
            raise Ec2ApiError("DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412)
        method = getattr(self.facts if action in HOST_FACTS else self.ec2, OPERATIONS[action])
        accepted = inspect.signature(method).parameters
        # Members rehost does not act on (ClientToken, ResolveAlias, Force, ...) are accepted and ignored.
        call = {k: v for k, v in params.items() if k in accepted}
        try:
            result = await run_in_threadpool(lambda: method(**call))
        except errors.RehostError as exc:
            raise _from_rehost(exc) from exc
        return op, result

    def _resources(self, params: dict[str, Any]) -> list[str]:
        arn = self.ec2.arn
        out = []
        if params.get("LaunchTemplateId"):
            out.append(arn(f"launch-template/{params['LaunchTemplateId']}"))
        for instance_id in params.get("InstanceIds") or ([params["InstanceId"]] if params.get("InstanceId") else []):
            out.append(arn(f"instance/{instance_id}"))
        return out or ["*"]


def _from_rehost(exc: errors.RehostError) -> Ec2ApiError:
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        return Ec2ApiError(code, exc.message)
    if isinstance(exc, errors.InvalidInput):
        return Ec2ApiError("InvalidParameterValue", exc.message)
    if isinstance(exc, errors.NotFound):
        return Ec2ApiError("InvalidParameterValue", exc.message)
    if isinstance(exc, errors.Conflict):
        return Ec2ApiError("IncorrectState", exc.message)
    if isinstance(exc, errors.AccessDenied):
        return Ec2ApiError("UnauthorizedOperation", exc.message, 403)
    return Ec2ApiError("InternalError", exc.message, 500)


def _error(err: Ec2ApiError, request_id: str) -> Response:
    return Response(error_xml(err, request_id), status_code=err.status, media_type="text/xml")
