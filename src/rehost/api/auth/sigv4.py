"""AWS Signature Version 4 verification, as AWS's front door does it.

Pure: the caller hands over what the server received (method, the path and query string exactly as they
came on the wire, headers, body) and a function that finds an access key; `verify_request` returns who
signed it or raises `AuthError` carrying the AWS error code, message and HTTP status the API answers with.

What a caller may rely on:
- Anything botocore's ``SigV4Auth`` signs (boto3, the AWS CLI v1) verifies, for rest-json services such
  as ``mgn`` (whose canonical URI is the wire path URI-encoded once more, so ``%3A`` is signed as
  ``%253A``) and query services such as ``ec2`` (form-encoded body). Presigned URLs
  (``X-Amz-Signature`` in the query string, botocore's ``SigV4QueryAuth``) verify too.
- The body is always covered: a ``x-amz-content-sha256`` header that does not match the body is refused,
  and ``UNSIGNED-PAYLOAD`` is refused unless the caller allows it.
- Signatures and session tokens are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote_plus

from rehost.errors import RehostError

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_PRESIGN_EXPIRES = 604800  # seven days, as AWS allows

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
_INVALID_TOKEN = "The security token included in the request is invalid."
_EXPIRED_TOKEN = "The security token included in the request is expired"

HeadersIn = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]


class AuthError(RehostError):
    """The request's authentication failed; `code` and `http_status` are what the API answers."""

    exit_code = 6

    def __init__(self, code: str, message: str, http_status: int) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status

    def __repr__(self) -> str:
        return f"AuthError({self.code!r}, {self.message!r}, {self.http_status})"


def _incomplete(message: str) -> AuthError:
    return AuthError("IncompleteSignatureException", message, 400)


def _invalid_signature(message: str = _SIGNATURE_MISMATCH) -> AuthError:
    return AuthError("InvalidSignatureException", message, 403)


def _unrecognized() -> AuthError:
    return AuthError("UnrecognizedClientException", _INVALID_TOKEN, 403)


@dataclass(frozen=True)
class KeyInfo:
    """What the key store knows about one access key (returned by the caller's `secret_lookup`).

    `session_token` and `expiration` are set for temporary credentials only; a request signed with such a
    key must carry that token in ``X-Amz-Security-Token`` (header, or query for presigned URLs).
    """

    access_key_id: str
    secret_access_key: str
    user_name: str = ""
    principal_arn: str = ""
    account_id: str = ""
    session_token: str | None = None
    expiration: datetime | None = None


@dataclass(frozen=True)
class VerifiedIdentity:
    """Who signed a request that verified."""

    access_key_id: str
    user_name: str
    principal_arn: str
    account_id: str
    session_token: str | None
    region: str
    service: str
    signed_at: datetime

    @property
    def is_temporary(self) -> bool:
        return self.session_token is not None


@dataclass(frozen=True)
class SigV4Credential:
    """The parsed ``Authorization`` header (or presigned query parameters)."""

    access_key_id: str
    date: str  # YYYYMMDD from the credential scope
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str
    presigned: bool = False
    expires: int | None = None  # seconds, presigned URLs only

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{self.terminator}"


# -- input normalisation -------------------------------------------------------------------------------


def _as_str(value: str | bytes) -> str:
    # ASGI hands headers over as latin-1 bytes.
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _header_lists(headers: HeadersIn) -> dict[str, list[str]]:
    """Lower-cased header name -> every value received, in order (repeated headers are kept)."""
    items: Iterable[tuple[str | bytes, str | bytes]]
    if isinstance(headers, Mapping):
        # Starlette's Headers.items() yields repeated headers once each, which is what we want.
        items = headers.items()
    else:
        items = headers
    out: dict[str, list[str]] = {}
    for name, value in items:
        out.setdefault(_as_str(name).lower(), []).append(_as_str(value))
    return out


def _first(headers: Mapping[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


def _split_query(query_string: str) -> list[tuple[str, str]]:
    """The raw ``key=value`` pairs of a query string, not decoded."""
    if not query_string:
        return []
    pairs = []
    for part in query_string.split("&"):
        key, _, value = part.partition("=")
        pairs.append((key, value))
    return pairs


def _query_params(query_string: str) -> dict[str, str]:
    """Decoded query parameters (the last value wins), for reading the presigned ``X-Amz-*`` ones."""
    return {unquote_plus(k): unquote_plus(v) for k, v in _split_query(query_string)}


# -- parsing -------------------------------------------------------------------------------------------


def _parse_scope(credential: str) -> tuple[str, str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or not all(parts):
        raise _incomplete(
            "Authorization header requires a 'Credential' of the form "
            f"<access key>/<YYYYMMDD>/<region>/<service>/{TERMINATOR}, got '{credential}'."
        )
    return parts[0], parts[1], parts[2], parts[3], parts[4]


def parse_authorization(headers: HeadersIn) -> SigV4Credential:
    """Parse ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``.

    Raises `AuthError` ``IncompleteSignatureException`` (400) when the header is missing, uses another
    algorithm, or lacks one of its three parts.
    """
    return _parse_authorization_value(_first(_header_lists(headers), "authorization"))


def _parse_authorization_value(value: str | None) -> SigV4Credential:
    if value is None:
        raise _incomplete("Request is missing Authentication Token")
    value = value.strip()
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        raise _incomplete(f"Unsupported AWS 'algorithm': '{algorithm}'. Authorization={value}")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        key, eq, val = item.strip().partition("=")
        if eq:
            fields[key.strip()] = val.strip()
    missing = [name for name in ("Credential", "Signature", "SignedHeaders") if not fields.get(name)]
    if missing:
        raise _incomplete(
            " ".join(f"Authorization header requires '{name}' parameter." for name in missing)
            + f" Authorization={value}"
        )
    key_id, date, region, service, terminator = _parse_scope(fields["Credential"])
    return SigV4Credential(
        access_key_id=key_id,
        date=date,
        region=region,
        service=service,
        terminator=terminator,
        signed_headers=tuple(h.strip().lower() for h in fields["SignedHeaders"].split(";")),
        signature=fields["Signature"],
    )


def _parse_presigned(params: Mapping[str, str]) -> SigV4Credential:
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise _incomplete(f"Unsupported AWS 'algorithm': '{params.get('X-Amz-Algorithm', '')}'.")
    missing = [
        name
        for name in (
            "X-Amz-Credential",
            "X-Amz-Signature",
            "X-Amz-SignedHeaders",
            "X-Amz-Date",
            "X-Amz-Expires",
        )
        if not params.get(name)
    ]
    if missing:
        raise _incomplete(" ".join(f"AWS query-string parameters must include '{name}'." for name in missing))
    try:
        expires = int(params["X-Amz-Expires"])
    except ValueError as exc:
        raise _incomplete("X-Amz-Expires should be a number") from exc
    if not 0 <= expires <= MAX_PRESIGN_EXPIRES:
        raise _incomplete(f"X-Amz-Expires must be between 0 and {MAX_PRESIGN_EXPIRES} seconds")
    key_id, date, region, service, terminator = _parse_scope(params["X-Amz-Credential"])
    return SigV4Credential(
        access_key_id=key_id,
        date=date,
        region=region,
        service=service,
        terminator=terminator,
        signed_headers=tuple(h.strip().lower() for h in params["X-Amz-SignedHeaders"].split(";")),
        signature=params["X-Amz-Signature"],
        presigned=True,
        expires=expires,
    )


def _request_time(headers: Mapping[str, list[str]], query: Mapping[str, str], presigned: bool) -> datetime:
    """The signing time: X-Amz-Date (header or presigned query), else the HTTP Date header."""
    raw = query.get("X-Amz-Date") if presigned else _first(headers, "x-amz-date")
    if raw:
        try:
            return datetime.strptime(raw, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError as exc:
            raise _incomplete(f"Date must be in ISO-8601 'basic format'. Got '{raw}'.") from exc
    http_date = None if presigned else _first(headers, "date")
    if http_date:
        try:
            parsed = parsedate_to_datetime(http_date)
        except (TypeError, ValueError) as exc:
            raise _incomplete(f"Date header could not be parsed: '{http_date}'.") from exc
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise _incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")


# -- canonical request ---------------------------------------------------------------------------------


def _normalize_path(path: str) -> str:
    """RFC 3986 dot-segment removal plus collapsing of empty segments, as botocore does before signing."""
    if not path:
        return "/"
    out: list[str] = []
    for segment in path.split("/"):
        if segment and segment != ".":
            if segment == "..":
                if out:
                    out.pop()
            else:
                out.append(segment)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and out else ""
    return first + "/".join(out) + last


def canonical_uri(raw_path: str) -> str:
    """The canonical URI for non-S3 services: the wire path, normalised, URI-encoded once more."""
    return quote(_normalize_path(raw_path), safe="/~")


def canonical_query_candidates(query_string: str, *, drop: str | None = None) -> list[str]:
    """The canonical query strings a correct signer may have used for this wire query string.

    The SigV4 rule is: decode every name and value, encode them with the unreserved set, sort by name then
    value. That is what botocore computes from ``params``; when it signs a URL that already carries a query
    it sorts the raw pairs without re-encoding instead. Both agree for anything botocore itself encoded,
    but a hand-written URL (``+`` for a space, an unencoded ``/``) differs, so both forms are accepted:
    each is computed by us from the request, so accepting either does not weaken the signature.
    """
    pairs = [(k, v) for k, v in _split_query(query_string) if drop is None or unquote_plus(k) != drop]
    spec = sorted(
        (quote(unquote_plus(k), safe="-_.~"), quote(unquote_plus(v), safe="-_.~")) for k, v in pairs
    )
    raw = sorted(pairs)
    candidates = ["&".join(f"{k}={v}" for k, v in spec)]
    raw_form = "&".join(f"{k}={v}" for k, v in raw)
    if raw_form != candidates[0]:
        candidates.append(raw_form)
    return candidates


def _canonical_headers(headers: Mapping[str, list[str]], signed: Iterable[str]) -> str:
    lines = []
    for name in signed:
        values = headers.get(name, [])
        lines.append(f"{name}:" + ",".join(" ".join(v.split()) for v in values))
    return "\n".join(lines) + "\n"


def _payload_hash(headers: Mapping[str, list[str]], body: bytes, allow_unsigned_payload: bool) -> str:
    declared = _first(headers, "x-amz-content-sha256")
    actual = hashlib.sha256(body).hexdigest()
    if declared is None:
        return actual
    declared = declared.strip()
    if declared == UNSIGNED_PAYLOAD and allow_unsigned_payload:
        return declared
    if _HEX64.match(declared.lower()):
        if not hmac.compare_digest(declared.lower(), actual):
            raise _invalid_signature(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
            )
        return declared
    raise _invalid_signature(f"x-amz-content-sha256 must be the hex SHA-256 of the body, not '{declared}'.")


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The derived SigV4 key for one day, region and service."""
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, TERMINATOR):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _string_to_sign(amz_date: str, scope: str, canonical_request: str) -> str:
    digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


# -- verification --------------------------------------------------------------------------------------


def _check_scope(cred: SigV4Credential, service: str, region: str, signed_at: datetime) -> None:
    if cred.terminator != TERMINATOR:
        raise _invalid_signature(
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{cred.terminator}'."
        )
    if cred.service != service:
        raise _invalid_signature(f"Credential should be scoped to correct service: '{service}'. ")
    if cred.region != region:
        raise _invalid_signature(f"Credential should be scoped to a valid region, not '{cred.region}'. ")
    if cred.date != signed_at.strftime("%Y%m%d"):
        raise _invalid_signature(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{cred.date}' != '{signed_at:%Y%m%d}', from '{signed_at.strftime(AMZ_DATE_FORMAT)}'."
        )
    if "host" not in cred.signed_headers:
        raise _invalid_signature("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")


def _check_time(cred: SigV4Credential, signed_at: datetime, now: datetime, max_skew: timedelta) -> None:
    fmt = AMZ_DATE_FORMAT
    minutes = int(max_skew.total_seconds() // 60)
    # A presigned URL stays valid for its X-Amz-Expires, which may be longer than the skew window.
    if not cred.presigned and signed_at < now - max_skew:
        raise _invalid_signature(
            f"Signature expired: {signed_at.strftime(fmt)} is now earlier than "
            f"{(now - max_skew).strftime(fmt)} ({now.strftime(fmt)} - {minutes} min.)"
        )
    if signed_at > now + max_skew:
        raise _invalid_signature(
            f"Signature not yet current: {signed_at.strftime(fmt)} is still later than "
            f"{(now + max_skew).strftime(fmt)} ({now.strftime(fmt)} + {minutes} min.)"
        )
    if cred.presigned and cred.expires is not None and now > signed_at + timedelta(seconds=cred.expires):
        raise _invalid_signature(
            f"Signature expired: {signed_at.strftime(fmt)} is now earlier than "
            f"{(now - timedelta(seconds=cred.expires)).strftime(fmt)} "
            f"({now.strftime(fmt)} - {cred.expires} sec.)"
        )


def _check_token(key: KeyInfo, presented: str | None, now: datetime) -> None:
    if key.session_token is None:
        # A long-term key with a session token attached is not something AWS accepts either.
        if presented:
            raise _unrecognized()
        return
    if not presented or not hmac.compare_digest(presented.encode(), key.session_token.encode()):
        raise _unrecognized()
    if key.expiration is not None and now >= key.expiration:
        raise AuthError("ExpiredTokenException", _EXPIRED_TOKEN, 403)


def verify_request(
    *,
    method: str,
    raw_path: str,
    query_string: str,
    headers: HeadersIn,
    body: bytes,
    secret_lookup: Callable[[str], KeyInfo | None],
    service: str,
    region: str,
    now: datetime,
    max_skew: timedelta = timedelta(minutes=15),
    allow_unsigned_payload: bool = False,
) -> VerifiedIdentity:
    """Verify a SigV4-signed request and return who signed it.

    `raw_path` and `query_string` are exactly as received on the wire, still percent-encoded (ASGI's
    ``scope["raw_path"]`` and ``scope["query_string"]``); a ``?query`` left on `raw_path` is split off.
    `headers` is a mapping (case-insensitive names) or the raw ``(name, value)`` pairs, which keeps
    repeated headers. `now` must be timezone-aware (naive is taken as UTC).

    Raises `AuthError` with code ``IncompleteSignatureException`` (400; missing or malformed
    Authorization / X-Amz-Date), ``InvalidSignatureException`` (403; wrong signature, tampered request,
    scope for another service or region, date outside `max_skew`, expired presigned URL),
    ``UnrecognizedClientException`` (403; unknown key, missing or wrong session token) or
    ``ExpiredTokenException`` (403; temporary credentials past their expiration).
    """
    if "?" in raw_path:
        raw_path, _, extra = raw_path.partition("?")
        query_string = query_string or extra
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    lists = _header_lists(headers)
    query = _query_params(query_string)
    presigned = "authorization" not in lists and "X-Amz-Signature" in query
    cred = (
        _parse_presigned(query) if presigned else _parse_authorization_value(_first(lists, "authorization"))
    )
    signed_at = _request_time(lists, query, presigned)
    _check_scope(cred, service, region, signed_at)
    _check_time(cred, signed_at, now, max_skew)

    key = secret_lookup(cred.access_key_id)
    if key is None:
        raise _unrecognized()
    token = query.get("X-Amz-Security-Token") if presigned else _first(lists, "x-amz-security-token")
    _check_token(key, token, now)

    amz_date = signed_at.strftime(AMZ_DATE_FORMAT)
    # The order is the one the client signed (botocore sorts, as the spec asks).
    signed = list(cred.signed_headers)
    head = f"{method.upper()}\n{canonical_uri(raw_path)}\n"
    tail = "\n" + _canonical_headers(lists, signed) + "\n" + ";".join(signed) + "\n"
    tail += _payload_hash(lists, body, allow_unsigned_payload)
    k_signing = signing_key(key.secret_access_key, cred.date, cred.region, cred.service)
    provided = cred.signature.strip().lower()
    ok = False
    for canonical_query in canonical_query_candidates(
        query_string, drop="X-Amz-Signature" if presigned else None
    ):
        sts = _string_to_sign(amz_date, cred.scope, head + canonical_query + tail)
        expected = hmac.new(k_signing, sts.encode("utf-8"), hashlib.sha256).hexdigest()
        # Evaluate every candidate so the time taken does not depend on which one matched.
        ok = hmac.compare_digest(expected, provided) or ok
    if not ok:
        raise _invalid_signature()
    return VerifiedIdentity(
        access_key_id=key.access_key_id,
        user_name=key.user_name,
        principal_arn=key.principal_arn,
        account_id=key.account_id,
        session_token=key.session_token,
        region=cred.region,
        service=cred.service,
        signed_at=signed_at,
    )
