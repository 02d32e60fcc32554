"""The control plane's ASGI application: MGN's API, the agent API, the installer, the EC2 subset, the console.

Every API request is authenticated (SigV4) and authorized (IAM) before it reaches a service. Service
methods are synchronous (they hold a database transaction) and run in the thread pool. Any error a user can
cause is answered in MGN's error shape; only a real fault is an InternalServerException, and it is logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route

from rehost import errors, ids
from rehost.api.agent.params import agent_model
from rehost.api.core.dispatch import MgnDispatcher, request_context, snake
from rehost.api.core.errors import (
    AwsError,
    from_rehost_error,
    uninitialized,
)
from rehost.api.core.model import RestJsonService, read_body

if TYPE_CHECKING:
    from rehost.controlplane import ControlPlane

log = logging.getLogger("rehost.api")

def _json_error(service: RestJsonService | None, err: AwsError) -> Response:
    if service is not None:
        body, headers = service.error_parts(err)
    else:
        body, headers = json.dumps({"message": err.message}).encode(), {}
    headers.update({"x-amzn-ErrorType": err.code, "x-amzn-RequestId": ids.new_id("req")})
    return Response(body, status_code=err.status, media_type="application/json", headers=headers)


class MgnApi:
    """MGN's rest-json wire protocol: SigV4, rate limit, route and parse, then `MgnDispatcher` (validation,
    IAM with the request's context, initialization, the service call), then the output serialized."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.model = RestJsonService("mgn")
        self.dispatcher = MgnDispatcher(cp.mgn, cp.authorizer)

    async def __call__(self, request: Request) -> Response:
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1").split("?", 1)[0]
        query = request.scope.get("query_string", b"").decode("latin-1")
        try:
            body = await read_body(request.stream())  # at most MAX_BODY_BYTES held, even before SigV4
            identity = await run_in_threadpool(
                self.cp.authorizer.authenticate, method=request.method, raw_path=raw_path, query_string=query,
                headers=request.scope["headers"], body=body, service="mgn", now=ids.utcnow())
            self.cp.rate_limiter.check(identity.access_key_id)
            match = self.model.match(request.method, raw_path)
            if match is None:
                raise AwsError("UnknownOperationException", f"No operation matches {request.method} {raw_path}", 404)
            op, labels = match
            # Before input parsing: a caller must learn the operation is missing, not that a field is.
            self.dispatcher.operation(op.name)
            params = self.model.parse_input(op, labels, query, {k.lower(): v for k, v in request.headers.items()}, body)
            result = await run_in_threadpool(self.dispatcher.dispatch, identity, op.name, params,
                                             request_context(request, identity))
            status, payload = self.model.serialize_output(op, result)
            return Response(payload, status_code=status, media_type="application/json")
        except AwsError as err:
            return _json_error(self.model, err)
        except errors.RehostError as exc:
            return _json_error(self.model, from_rehost_error(exc))
        except Exception:
            log.exception("internal error in %s %s", request.method, raw_path)
            return _json_error(self.model, AwsError("InternalServerException", "An internal error occurred.", 500))


class AgentApi:
    """``POST /agent/<Operation>``: the private operations the replication agent calls, served from the
    agent API's own model (`rehost.api.agent.params`) as MgnApi serves MGN's: the operation is found by its
    exact name in the model, its input validated against the model's shapes (undeclared members refused)
    before any service code runs, and IAM asked about exactly ``mgn:<that operation>``."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.model = RestJsonService(agent_model(), reject_unknown=True)

    async def __call__(self, request: Request) -> Response:
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1").split("?", 1)[0]
        query = request.scope.get("query_string", b"").decode("latin-1")
        try:
            body = await read_body(request.stream())
            identity = await run_in_threadpool(
                self.cp.authorizer.authenticate, method=request.method, raw_path=raw_path, query_string=query,
                headers=request.scope["headers"], body=body, service="mgn", now=ids.utcnow())
            match = self.model.match(request.method, raw_path)
            if match is None:
                raise AwsError("UnknownOperationException", f"Unknown agent operation {raw_path[:200]!r}", 404)
            op, labels = match
            method = getattr(self.cp.agent, snake(op.name))
            params = self.model.check_input(op, self.model.parse_input(
                op, labels, query, {k.lower(): v for k, v in request.headers.items()}, body))
            server_id = params.get("sourceServerID")
            resource = self.cp.mgn.account.arn(f"source-server/{server_id}" if server_id else "source-server/*")
            await run_in_threadpool(self.cp.authorizer.authorize, identity, f"mgn:{op.name}", [resource],
                                    request_context(request, identity))
            if not self.cp.mgn.is_initialized():
                raise uninitialized()
            result = await run_in_threadpool(method, **params)
            return Response(json.dumps(result).encode(), media_type="application/json")
        except AwsError as err:
            return _json_error(self.model, err)
        except errors.RehostError as exc:
            return _json_error(self.model, from_rehost_error(exc))
        except Exception:
            log.exception("internal error in agent call %s", raw_path[:200])
            return _json_error(self.model, AwsError("InternalServerException", "An internal error occurred.", 500))


def build_app(cp: ControlPlane, extra_routes: list[Route | Mount] | None = None,
              root_post: Callable[[Request], Awaitable[Response]] | None = None) -> Starlette:
    mgn_api = MgnApi(cp)
    agent_api = AgentApi(cp)

    async def installer(request: Request) -> Response:
        path = await run_in_threadpool(cp.installer_path)
        return FileResponse(path, media_type="application/octet-stream",
                            filename="rehost-replication-installer-init")

    async def root(request: Request) -> Response:
        ctype = request.headers.get("content-type", "")
        if request.method == "POST" and root_post is not None and ctype.startswith("application/x-www-form-urlencoded"):
            return await root_post(request)
        if request.method == "GET" and request.url.path == "/":
            return Response(status_code=302, headers={"location": "/console"})
        return await mgn_api(request)

    async def health(request: Request) -> Response:
        return Response(json.dumps({"status": "ok"}), media_type="application/json")

    routes: list[Any] = [
        Route("/healthz", health, methods=["GET"]),
        Route("/installer/linux/rehost-replication-installer-init", installer, methods=["GET"]),
        # A bound method, not the instance: Starlette treats a callable object as a raw ASGI app.
        Route("/agent/{action}", agent_api.__call__, methods=["POST"]),
        *(extra_routes or []),
        Route("/{path:path}", root, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    return Starlette(routes=routes)
