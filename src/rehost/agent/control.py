"""Client of the agent-facing API (``POST {endpoint}/agent/{Action}``, JSON, SigV4 service ``mgn``).

One method per action of docs/contracts.md "Agent-facing API", named after it in snake case. Every call
either returns the decoded JSON response or raises a rehost error:

- `AccessDenied` for 401/403 (wrong keys, bad signature, a policy that denies),
- `QuotaExceeded` for 402 / ServiceQuotaExceededException,
- `NotFound`, `Conflict`, `InvalidInput` for the matching MGN errors,
- `EndpointUnreachable` when no HTTP answer came back at all (DNS, refused, TLS, timeout).

The message is the server's own ``message`` so the installer can print it as its one line.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from rehost.agent.sigv4 import Credentials, sign_request
from rehost.errors import AccessDenied, Conflict, InvalidInput, NotFound, QuotaExceeded, RehostError


class EndpointUnreachable(RehostError):
    """The rehost endpoint could not be reached."""

    exit_code = 7


_ERRORS = {
    "AccessDeniedException": AccessDenied,
    "UnrecognizedClientException": AccessDenied,
    "InvalidSignatureException": AccessDenied,
    "ExpiredTokenException": AccessDenied,
    "ServiceQuotaExceededException": QuotaExceeded,
    "ResourceNotFoundException": NotFound,
    "ConflictException": Conflict,
    "ValidationException": InvalidInput,
}


class AgentApiClient:
    """A blocking client of the agent API. Safe to share between threads (it keeps no connection)."""

    def __init__(
        self,
        endpoint: str,
        region: str,
        credentials: Credentials,
        ca_bundle: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.region = region
        self.credentials = credentials
        self.timeout = timeout
        self._context: ssl.SSLContext | None = None
        if self.endpoint.startswith("https://"):
            self._context = (
                ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
            )

    def call(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to ``/agent/{action}`` and return the decoded response (``{}`` for an empty one)."""
        url = f"{self.endpoint}/agent/{action}"
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        headers = sign_request(
            "POST", url, data, self.credentials, self.region, "mgn", {"Content-Type": "application/json"}
        )
        headers.pop("Host", None)  # urllib sends the same Host itself
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._context) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise _translate(exc) from exc
        except (TimeoutError, urllib.error.URLError, ConnectionError, ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EndpointUnreachable(f"Cannot reach the rehost endpoint {self.endpoint}: {reason}") from exc
        if not raw:
            return {}
        try:
            result = json.loads(raw)
        except ValueError as exc:
            raise EndpointUnreachable(
                f"The endpoint {self.endpoint} did not answer as a rehost endpoint"
            ) from exc
        return result if isinstance(result, dict) else {}

    # -- one method per action -------------------------------------------------------------------------

    def register_agent(
        self,
        hints: dict[str, Any],
        source_properties: dict[str, Any],
        devices: list[dict[str, Any]],
        tags: dict[str, str] | None = None,
        no_replication: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"hints": hints, "sourceProperties": source_properties, "devices": devices}
        if tags:
            body["tags"] = tags
        if no_replication:
            body["noReplication"] = True
        return self.call("RegisterAgentForMgn", body)

    def update_source_properties(self, source_server_id: str, source_properties: dict[str, Any]) -> None:
        self.call(
            "UpdateAgentSourcePropertiesForMgn",
            {"sourceServerID": source_server_id, "sourceProperties": source_properties},
        )

    def get_replication_info(self, source_server_id: str) -> dict[str, Any]:
        return self.call("GetAgentReplicationInfoForMgn", {"sourceServerID": source_server_id})

    def update_replication_info(self, source_server_id: str, info: dict[str, Any]) -> None:
        body = dict(info)
        body["sourceServerID"] = source_server_id
        self.call("UpdateAgentReplicationInfoForMgn", body)

    def update_backlog(self, source_server_id: str, backlogged_bytes: int, lag_seconds: float | None) -> None:
        body: dict[str, Any] = {
            "sourceServerID": source_server_id,
            "backloggedStorageBytes": backlogged_bytes,
        }
        if lag_seconds is not None:
            body["lagSeconds"] = lag_seconds
        self.call("UpdateAgentBacklogForMgn", body)

    def get_commands(self, source_server_id: str) -> list[dict[str, Any]]:
        return list(
            self.call("GetAgentCommandForMgn", {"sourceServerID": source_server_id}).get("commands", [])
        )

    def get_runtime_configuration(self, source_server_id: str) -> dict[str, Any]:
        return self.call("GetAgentRuntimeConfigurationForMgn", {"sourceServerID": source_server_id})

    def get_confirmed_resume_info(self, source_server_id: str) -> dict[str, Any]:
        return self.call("GetAgentConfirmedResumeInfoForMgn", {"sourceServerID": source_server_id})

    def send_metrics(self, source_server_id: str, metrics: list[dict[str, Any]]) -> None:
        self.call("SendAgentMetricsForMgn", {"sourceServerID": source_server_id, "metrics": metrics})

    def send_logs(self, source_server_id: str, lines: list[str]) -> None:
        self.call("SendAgentLogsForMgn", {"sourceServerID": source_server_id, "lines": lines})


def _translate(exc: urllib.error.HTTPError) -> RehostError:
    """Turn an MGN-shaped HTTP error into the rehost error a caller can act on."""
    try:
        raw = exc.read()
    except OSError:
        raw = b""
    message = ""
    error_type = exc.headers.get("x-amzn-ErrorType", "") if exc.headers else ""
    try:
        doc = json.loads(raw) if raw else {}
        if isinstance(doc, dict):
            message = str(doc.get("message") or doc.get("Message") or "")
            error_type = error_type or str(doc.get("__type", ""))
    except ValueError:
        pass
    error_type = error_type.split(":", 1)[0].rsplit("#", 1)[-1]
    cls = _ERRORS.get(error_type)
    if cls is None:
        if exc.code in (401, 403):
            cls = AccessDenied
        elif exc.code == 402:
            cls = QuotaExceeded
        elif exc.code == 404 and not error_type:
            return EndpointUnreachable(
                f"The endpoint does not serve the rehost agent API (HTTP 404 for {exc.url})"
            )
        else:
            cls = RehostError
    text = message or f"HTTP {exc.code} {error_type or exc.reason}"
    return cls(text)
