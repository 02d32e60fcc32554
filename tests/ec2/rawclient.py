"""Send a SigV4-signed raw EC2 form request (for what botocore refuses to send, like missing members)."""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlencode

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def signed_form_post(endpoint: str, key: tuple[str, str], form: dict[str, str],
                     region: str = "us-east-1") -> tuple[int, str]:
    """POST ``form`` to ``endpoint``/ signed for service ec2; returns (HTTP status, body text)."""
    data = urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    request = AWSRequest(method="POST", url=endpoint + "/", data=data, headers=headers)
    SigV4Auth(Credentials(*key), "ec2", region).add_auth(request)
    prepared = urllib.request.Request(endpoint + "/", data=data, method="POST", headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(prepared, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
