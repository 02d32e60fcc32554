"""Generated credentials look like AWS's and are safe to pass on a command line."""

from __future__ import annotations

import re

from rehost.iam.users import _key_id, _secret


def test_secrets_use_base64_characters_and_never_start_like_an_option() -> None:
    for _ in range(2000):
        secret = _secret()
        assert re.fullmatch(r"[A-Za-z0-9+/]{40}", secret)


def test_key_ids_are_aws_shaped() -> None:
    assert re.fullmatch(r"AKIA[A-Z2-7]{16}", _key_id("AKIA"))
    assert re.fullmatch(r"ASIA[A-Z2-7]{16}", _key_id("ASIA"))
