"""The console's request plumbing: who is signed in, the same IAM evaluation as the API, rendering.

Every page and action goes through `Ctx`: `Ctx.call("StartTest", sourceServerIDs=[...])` goes through the
API's own front door (`rehost.api.core.dispatch.MgnDispatcher`): the model's validation, ``mgn:StartTest``
on every ARN the input names with this request's IAM context (source address, time, TLS, the user's
tags), UninitializedAccountException, then the MGN service. A refusal raises `Refused` carrying the API's
own error message, which the page shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from rehost import errors, ids
from rehost.api.auth.sigv4 import VerifiedIdentity
from rehost.api.core.dispatch import MgnDispatcher, request_context, snake
from rehost.api.core.errors import AwsError, from_rehost_error
from rehost.api.core.model import sanitize
from rehost.console import present
from rehost.console.session import Session, SessionStore, load_or_create_key
from rehost.console.throttle import SignInThrottle

if TYPE_CHECKING:
    from rehost.controlplane import ControlPlane

log = logging.getLogger("rehost.console")
HERE = Path(__file__).parent
SECURITY_HEADERS = {
    # Everything is served from here: no inline script or style, no framing, forms post only to us.
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


class Refused(Exception):
    """An action the API would refuse; `message` is the API's error message, `code` its error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def of(cls, exc: Exception) -> Refused:
        if isinstance(exc, AwsError):
            return cls(exc.code, exc.message)
        if isinstance(exc, errors.RehostError):
            err = from_rehost_error(exc)
            # EC2's errors carry EC2's own code (InvalidLaunchTemplateId.NotFound, ...).
            return cls(str(getattr(exc, "code", "") or err.code), err.message)
        raise exc


def form_number(text: str | None) -> int | str:
    """A form field meant as a whole number: the int, 0 when empty, else the text as typed, which the
    model's validation then refuses with the API's own message (nothing in a form is checked twice)."""
    text = (text or "").strip()
    try:
        return int(text or 0)
    except ValueError:
        return text


class Console:
    """What every request shares: the control plane, the session table and the templates."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.sessions = SessionStore(load_or_create_key(cp.settings.data_dir), cp.store)
        self.dispatcher = MgnDispatcher(cp.mgn, cp.authorizer)
        self.signin_throttle = SignInThrottle()
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(when=present.when, bytes=present.human_bytes, lifecycle=present.lifecycle_label)
        # The macros are globals (not imported per template) so a live block rendered alone has them too.
        macros = self.env.get_template("macros.html").module
        self.env.globals.update(badge=macros.badge, replication_cell=macros.replication_cell,  # type: ignore[attr-defined]
                                action_menus=macros.action_menus)  # type: ignore[attr-defined]

    def identity_of(self, session: Session) -> VerifiedIdentity | None:
        """The session's identity, if its access key still exists and is active."""
        record = self.cp.iam.lookup_key(session.access_key_id)
        if record is None or record.status != "Active" or record.user_name != session.user_name:
            return None
        if record.expiration is not None and record.expiration <= ids.utcnow():
            return None
        return VerifiedIdentity(
            access_key_id=record.access_key_id, user_name=record.user_name, principal_arn=record.user_arn,
            account_id=self.cp.iam.account_id, session_token=record.session_token, region=self.cp.settings.region,
            service="mgn", signed_at=ids.utcnow())


@dataclass
class Ctx:
    """One signed-in request."""

    console: Console
    request: Request
    session: Session
    identity: VerifiedIdentity
    form: FormData | None = None
    _cache: dict[tuple[str, str], bool] = field(default_factory=dict)
    _context: dict[str, str] | None = None

    @property
    def cp(self) -> ControlPlane:
        return self.console.cp

    @property
    def base(self) -> str:
        return str(self.request.scope.get("root_path", "")).rstrip("/")

    def server_arn(self, server_id: str = "*") -> str:
        return self.cp.mgn.account.arn(f"source-server/{server_id}")

    # -- authorization ----------------------------------------------------------------------------------

    @property
    def context(self) -> dict[str, str]:
        """This request's IAM condition keys, as the API builds them (the console's region)."""
        if self._context is None:
            self._context = request_context(self.request, self.identity, region=self.cp.settings.region)
        return self._context

    def authorize(self, action: str, resources: list[str] | None = None) -> None:
        resources = resources or ["*"]
        tags = self.console.dispatcher.resource_tags(resources) if action.startswith("mgn:") else None
        try:
            self.cp.authorizer.authorize(self.identity, action, resources, self.context, tags)
        except AwsError as exc:
            raise Refused(exc.code, exc.message) from exc

    def can(self, action: str, resource: str = "*") -> bool:
        """Whether the signed-in user may perform ``action`` (decides which buttons are shown)."""
        key = (action, resource)
        if key not in self._cache:
            try:
                self.authorize(action, [resource])
                self._cache[key] = True
            except Refused:
                self._cache[key] = False
        return self._cache[key]

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """Run an MGN operation as the API would for this user; `Refused` with the API's message if not."""
        try:
            result = self.console.dispatcher.dispatch(self.identity, operation, params, self.context)
        except AwsError as exc:
            raise Refused.of(exc) from exc
        # A stored value that does not fit the model is left out (and logged), as the API does: never a 500.
        shape = self.console.dispatcher.model.operation_model(operation).output_shape
        return sanitize(shape, result) if shape is not None else result

    # IAM pages: AWSApplicationMigrationFullAccess grants no iam:* action, yet the hands-on's Step 1 needs
    # an operator who can create the agent's user. So the IAM pages are open to users whose own policies
    # allow the IAM action (a custom "iam:*" inline policy) and to the built-in `admin` user, which every
    # data directory creates as its administrator (`rehost iam` on the host can do the same).
    def can_iam(self, action: str, resource: str = "*") -> bool:
        return self.identity.user_name == "admin" or self.can(action, resource)

    def require_iam(self, action: str, resource: str = "*") -> None:
        if self.identity.user_name != "admin":
            self.authorize(action, [resource])

    def iam_user_arn(self, name: str) -> str:
        return self.cp.iam.user_arn(name)

    def ec2_arn(self, resource: str) -> str:
        return f"arn:aws:ec2:{self.cp.settings.region}:{self.cp.mgn.account.account_id}:{resource}"

    def authorize_ec2(self, operation: str, params: dict[str, Any]) -> None:
        """``ec2:<Operation>`` on the launch template and instances the input names, as the EC2 API checks."""
        resources = [self.ec2_arn(f"launch-template/{params['LaunchTemplateId']}")] if params.get("LaunchTemplateId") else []
        resources += [self.ec2_arn(f"instance/{i}") for i in params.get("InstanceIds") or []]
        try:
            self.cp.authorizer.authorize(self.identity, f"ec2:{operation}", resources or ["*"], self.context)
        except AwsError as exc:
            raise Refused("UnauthorizedOperation",
                          f"You are not authorized to perform this operation. {exc.message}") from exc

    def can_ec2(self, operation: str, **params: Any) -> bool:
        try:
            self.authorize_ec2(operation, params)
            return True
        except Refused:
            return False

    def ec2_call(self, operation: str, **params: Any) -> Any:
        """An EC2 launch-template operation through ``cp.ec2``, authorized as the EC2 API would."""
        ec2 = getattr(self.cp, "ec2", None)
        if ec2 is None:
            raise Refused("NotAvailable", "EC2 launch templates are not available on this control plane yet.")
        self.authorize_ec2(operation, params)
        try:
            return getattr(ec2, snake(operation))(**params)
        except (AwsError, errors.RehostError) as exc:
            raise Refused.of(exc) from exc

    # -- responses --------------------------------------------------------------------------------------

    def flash(self, kind: str, message: str, link: tuple[str, str] | None = None) -> None:
        self.console.sessions.add_flash(self.session, (kind, message, link))

    def redirect(self, path: str) -> Response:
        return RedirectResponse(self.base + path, status_code=303)

    def render(self, template: str, status: int = 200, **values: Any) -> Response:
        live = self.request.headers.get("x-live")
        tmpl = self.console.env.get_template(template)
        values.update(me=self.identity.user_name, csrf=self.session.csrf, base=self.base, can=self.can,
                      can_iam=self.can_iam, region=self.cp.settings.region, account=self.cp.mgn.account.account_id,
                      ec2_available=getattr(self.cp, "ec2", None) is not None)
        if live:
            # A live refresh: only the named block, rendered with the page's values (flashes stay queued).
            if live not in tmpl.blocks:
                return HTMLResponse("no such block", status_code=400, headers=SECURITY_HEADERS)
            body = "".join(tmpl.blocks[live](tmpl.new_context(values)))
            return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)
        values["flashes"] = self.console.sessions.take_flashes(self.session) if self.session.flashes else []
        return HTMLResponse(tmpl.render(values), status_code=status, headers=SECURITY_HEADERS)


Handler = Callable[[Ctx], Response]
