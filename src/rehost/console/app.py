"""The web console's ASGI application, mounted by `rehost server` at ``/console``.

`console_app(cp)` returns a Starlette app. Pages are rendered on the server (Jinja2) and work without
script; ``static/console.js`` adds confirmation dialogs, selection-aware menus and live refresh (it
re-fetches a page with an ``X-Live: <block>`` header and swaps in that block every few seconds).
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rehost.api.core.errors import AwsError
from rehost.api.core.model import read_body
from rehost.console import pages_apps, pages_import, pages_jobs, pages_servers, pages_settings
from rehost.console.core import HERE, SECURITY_HEADERS, Console, Ctx, Handler, Refused
from rehost.console.session import COOKIE, PRE_COOKIE, SESSION_TTL, check_csrf

if TYPE_CHECKING:
    from rehost.controlplane import ControlPlane

Endpoint = Callable[[Request], Awaitable[Response]]


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _cookie_flags(request: Request) -> dict[str, bool | str]:
    return {"httponly": True, "samesite": "strict", "secure": request.url.scheme == "https",
            "path": _base(request) or "/"}


FORM_MAX_BYTES = 256 * 1024  # the largest console form (user data in launch settings) is far below this
UPLOAD_FORM_MAX_BYTES = 8 * 1024 * 1024 + 64 * 1024  # an import file (pages_import.UPLOAD_MAX_BYTES) and its form


class FormTooLarge(Exception):
    """A form body over FORM_MAX_BYTES: answered 413, never held in memory whole."""


async def read_form(request: Request) -> FormData:
    """The posted form, read with a cap: application/x-www-form-urlencoded (FORM_MAX_BYTES), or
    multipart/form-data (the import file upload; UPLOAD_FORM_MAX_BYTES)."""
    multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
    cap = UPLOAD_FORM_MAX_BYTES if multipart else FORM_MAX_BYTES
    try:
        body = await read_body(request.stream(), cap)
    except AwsError as exc:
        raise FormTooLarge(exc.message) from exc
    if multipart:
        async def once() -> AsyncGenerator[bytes, None]:
            yield body

        try:
            return await MultiPartParser(request.headers, once(), max_files=1, max_fields=20,
                                         max_part_size=cap).parse()
        except MultiPartException as exc:
            raise FormTooLarge(f"The form could not be read: {exc.message}") from exc
    pairs: list[tuple[str, str | UploadFile]] = list(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return FormData(pairs)


def _too_large(exc: FormTooLarge) -> Response:
    return HTMLResponse(f"{exc} (at most {FORM_MAX_BYTES} bytes).", status_code=413, headers=SECURITY_HEADERS)


def page(console: Console, handler: Handler) -> Endpoint:
    """Wrap a handler: require a session, check CSRF on POST, run it in the thread pool.

    A handler raising `Refused` on POST is answered with the error flashed on the page it came from.
    """

    async def endpoint(request: Request) -> Response:
        session = console.sessions.get(request.cookies.get(COOKIE))
        identity = await run_in_threadpool(console.identity_of, session) if session else None
        if session is None or identity is None:
            if request.headers.get("x-live"):
                return Response(status_code=401)
            return RedirectResponse(f"{_base(request)}/signin", status_code=303)
        ctx = Ctx(console, request, session, identity)
        if request.method == "POST":
            try:
                ctx.form = await read_form(request)
            except FormTooLarge as exc:
                return _too_large(exc)
            if not check_csrf(session.csrf, str(ctx.form.get("csrf") or "")):
                return HTMLResponse("Invalid or missing CSRF token: reload the page and try again.", status_code=403,
                                    headers=SECURITY_HEADERS)
        try:
            return await run_in_threadpool(handler, ctx)
        except Refused as exc:
            if request.method != "POST":
                status = {"AccessDeniedException": 403, "ResourceNotFoundException": 404}.get(exc.code, 400)
                return await run_in_threadpool(functools.partial(ctx.render, "refused.html", status, nav="", error=exc))
            ctx.flash("error", exc.message)
            back = str(ctx.form.get("back") or "") if ctx.form else ""
            # Only ever redirect within the console.
            return ctx.redirect(back if back.startswith("/") and not back.startswith("//") else "/servers")

    return endpoint


def _signin_page(console: Console, request: Request, error: str = "", status: int = 200,
                 headers: dict[str, str] | None = None) -> Response:
    pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
    body = console.env.get_template("signin.html").render(
        base=_base(request), token=console.sessions.pre_token(pre), error=error, region=console.cp.settings.region)
    response = HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})
    response.set_cookie(PRE_COOKIE, pre, max_age=3600, **_cookie_flags(request))  # type: ignore[arg-type]
    return response


def console_app(cp: ControlPlane) -> Starlette:
    """The console for one control plane (mount it at ``/console``)."""
    console = Console(cp)

    async def signin(request: Request) -> Response:
        if request.method == "GET":
            return _signin_page(console, request)
        try:
            form = await read_form(request)
        except FormTooLarge as exc:
            return _too_large(exc)
        expected = console.sessions.pre_token(request.cookies.get(PRE_COOKIE))
        if not request.cookies.get(PRE_COOKIE) or not check_csrf(expected, str(form.get("csrf") or "")):
            return _signin_page(console, request, "Your sign-in form expired. Please try again.", 403)
        key_id = str(form.get("access_key_id") or "").strip()
        secret = str(form.get("secret_access_key") or "")
        address = request.client.host if request.client else ""
        # Refused before the secret is looked at, so a locked-out guesser learns nothing.
        refusal = console.signin_throttle.begin(address, key_id)
        if refusal is not None:
            return _signin_page(console, request, refusal[0], 429, {"retry-after": str(refusal[1])})
        ok = False
        try:
            record = await run_in_threadpool(console.cp.iam.lookup_key, key_id) if key_id else None
            ok = (record is not None and record.status == "Active" and record.session_token is None
                  and hmac.compare_digest(record.secret_access_key.encode(), secret.encode()))
        finally:
            console.signin_throttle.end(address, key_id, ok)
        # One message for every failure, so the form does not reveal which keys exist.
        if not ok or record is None:
            return _signin_page(console, request, "The access key ID or secret access key is not valid.", 401)
        _, cookie = console.sessions.create(record.access_key_id, record.user_name)
        response = RedirectResponse(f"{_base(request)}/", status_code=303)
        response.set_cookie(COOKIE, cookie, max_age=int(SESSION_TTL), **_cookie_flags(request))  # type: ignore[arg-type]
        response.delete_cookie(PRE_COOKIE, path=_base(request) or "/")
        return response

    async def signout(request: Request) -> Response:
        session = console.sessions.get(request.cookies.get(COOKIE))
        try:
            form = await read_form(request)
        except FormTooLarge as exc:
            return _too_large(exc)
        if session is not None and check_csrf(session.csrf, str(form.get("csrf") or "")):
            console.sessions.drop(session)
        response = RedirectResponse(f"{_base(request)}/signin", status_code=303)
        response.delete_cookie(COOKIE, path=_base(request) or "/")
        return response

    def home(ctx: Ctx) -> Response:
        return ctx.redirect("/servers" if ctx.cp.mgn.is_initialized() else "/getting-started")

    routes: list[Route | Mount] = [
        Route("/signin", signin, methods=["GET", "POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/", page(console, home), methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    for module in (pages_settings, pages_servers, pages_apps, pages_jobs, pages_import):
        for path, handler, methods in module.ROUTES:
            routes.append(Route(path, page(console, handler), methods=methods))
    return Starlette(routes=routes)


def console_routes(cp: ControlPlane, prefix: str = "/console") -> list[Route | Mount]:
    """The routes `rehost server` adds: the console under ``prefix``, and ``prefix`` itself redirecting
    into it (a Mount only matches ``prefix/...``; without this the API's catch-all would answer)."""

    async def to_console(request: Request) -> Response:
        return RedirectResponse(f"{prefix}/", status_code=307)

    return [Route(prefix, to_console, methods=["GET"]), Mount(prefix, app=console_app(cp))]
