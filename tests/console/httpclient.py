"""A small cookie-keeping HTTP client that signs in to the console as a browser form would."""

from __future__ import annotations

import functools
import http.client
import http.cookiejar
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class _FromAddress(urllib.request.HTTPHandler):
    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(http.client.HTTPConnection, source_address=(self.address, 0)), req)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    set_cookies: list[str]
    body: str

    def csrf(self) -> str:
        m = _CSRF.search(self.body)
        assert m, "no CSRF token in the page"
        return m.group(1)


@dataclass
class ConsoleClient:
    endpoint: str
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)
    source_address: str | None = None  # connect from this local address (any 127.x.y.z works on loopback)

    def _open(self, request: urllib.request.Request) -> Response:
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()]
        if self.source_address:
            handlers.append(_FromAddress(self.source_address))
        opener = urllib.request.build_opener(*handlers)
        try:
            resp = opener.open(request, timeout=30)
        except urllib.error.HTTPError as exc:
            resp = exc
        body = resp.read().decode(errors="replace")
        return Response(resp.status if hasattr(resp, "status") else resp.code, dict(resp.headers.items()),
                        resp.headers.get_all("set-cookie") or [], body)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return self._open(urllib.request.Request(self.endpoint + path, headers=headers or {}))

    def post(self, path: str, form: dict[str, str] | list[tuple[str, str]]) -> Response:
        data = urllib.parse.urlencode(form).encode()
        return self._open(urllib.request.Request(self.endpoint + path, data=data, method="POST",
                                                 headers={"content-type": "application/x-www-form-urlencoded"}))

    def post_multipart(self, path: str, fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> Response:
        """POST multipart/form-data, as a browser sends a form with a file input; ``files``: name -> (filename, bytes)."""
        boundary = "----rehost" + secrets.token_hex(8)
        parts: list[bytes] = []
        for name, value in fields.items():
            parts.append(f'--{boundary}\r\ncontent-disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        for name, (filename, data) in files.items():
            parts.append(f'--{boundary}\r\ncontent-disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                         f"content-type: text/csv\r\n\r\n".encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self._open(urllib.request.Request(self.endpoint + path, data=body, method="POST",
                                                 headers={"content-type": f"multipart/form-data; boundary={boundary}"}))

    def sign_in(self, key_id: str, secret: str) -> Response:
        page = self.get("/console/signin")
        return self.post("/console/signin", {"csrf": page.csrf(), "access_key_id": key_id, "secret_access_key": secret})

    def csrf(self) -> str:
        """The session's CSRF token, read from a page as a browser would see it."""
        return self.get("/console/jobs").csrf()
