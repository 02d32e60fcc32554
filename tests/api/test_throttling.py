"""ThrottlingException: a key that exceeds the configured request rate is told to slow down."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import RunningServer, free_port


def test_a_burst_beyond_the_rate_limit_is_throttled_with_retry_after(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data", free_port(), extra_args=("--api-rate-limit", "0.5")).start()
    try:
        mgn = server.client()  # one attempt per call: botocore would otherwise retry throttling itself
        mgn.initialize_service()  # the burst is 1 token at 0.5/s: this call takes it
        with pytest.raises(mgn.exceptions.ThrottlingException) as exc:
            mgn.describe_source_servers()
        assert exc.value.response["Error"]["Code"] == "ThrottlingException"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert int(exc.value.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"]) >= 1
        other = server.client()  # another key has its own bucket
        assert other.describe_source_servers()["items"] == []
    finally:
        server.stop()
