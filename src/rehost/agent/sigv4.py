"""AWS Signature Version 4 request signing, stdlib only.

`sign_request` returns the headers to send with a request so that any SigV4 verifier (botocore's
``SigV4Auth`` computes the same signature, and rehost's ``api.auth.sigv4`` checks it) accepts it. The
installer signs with the credentials it is given, the installed agent with the key the control plane issued
it at registration (its own server's calls only); the signing name is ``mgn`` (the agent API's service).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"


class Credentials(NamedTuple):
    """An access key pair and, for temporary credentials, the session token."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The derived key for one day, region and service."""
    k = _hmac(("AWS4" + secret).encode("utf-8"), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for part in query.split("&"):
        key, _, value = part.partition("=")
        pairs.append((quote(key, safe="-_.~"), quote(value, safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def sign_request(
    method: str,
    url: str,
    body: bytes,
    credentials: Credentials,
    region: str,
    service: str = "mgn",
    headers: Mapping[str, str] | None = None,
    now: datetime.datetime | None = None,
) -> dict[str, str]:
    """Headers for `method url` with `body`: the given headers plus Host, X-Amz-Date, X-Amz-Content-Sha256,
    X-Amz-Security-Token (when the credentials have one) and Authorization.

    Every header passed in is signed; names keep their case in the result, the signature uses them
    lower-cased as SigV4 requires.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 - Python 3.8
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    parts = urlsplit(url)
    host = parts.netloc
    # The default port is not part of Host (as HTTP clients send it), so it is not signed either.
    if (parts.scheme == "https" and host.endswith(":443")) or (
        parts.scheme == "http" and host.endswith(":80")
    ):
        host = host.rsplit(":", 1)[0]
    payload_hash = hashlib.sha256(body).hexdigest()
    out: dict[str, str] = dict(headers or {})
    out["Host"] = host
    out["X-Amz-Date"] = amz_date
    out["X-Amz-Content-Sha256"] = payload_hash
    if credentials.session_token:
        out["X-Amz-Security-Token"] = credentials.session_token
    canon = {k.lower(): " ".join(str(v).strip().split()) for k, v in out.items()}
    signed_names = sorted(canon)
    canonical_headers = "".join(f"{name}:{canon[name]}\n" for name in signed_names)
    signed_headers = ";".join(signed_names)
    path = quote(parts.path or "/", safe="/-_.~")
    canonical_request = "\n".join(
        [method.upper(), path, _canonical_query(parts.query), canonical_headers, signed_headers, payload_hash]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
    )
    key = signing_key(credentials.secret_access_key, date, region, service)
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    out["Authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return out
