"""`rehost server`'s settings: flags over REHOST_* variables over defaults, and durations checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rehost.config import load_settings
from rehost.errors import InvalidInput


def test_flags_override_environment_over_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REHOST_SNAPSHOT_INTERVAL", "120")
    monkeypatch.setenv("REHOST_MONITOR_INTERVAL", "2")
    settings = load_settings(data_dir=tmp_path, monitor_interval=1)
    assert (settings.snapshot_interval, settings.monitor_interval, settings.agent_silence_seconds) == (120, 1, 60)


@pytest.mark.parametrize("kwargs, message", [
    ({"snapshot_interval": -1}, "snapshot interval must be 0 (off) or a positive number of seconds, not -1"),
    ({"monitor_interval": 0}, "monitor interval must be a positive number of seconds, not 0"),
    ({"agent_silence_seconds": -5}, "agent silence must be a positive number of seconds, not -5"),
    ({"api_rate_limit": -1}, "API rate limit must be 0 (off) or positive, not -1"),
])
def test_bad_durations_are_refused(tmp_path: Path, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(data_dir=tmp_path, **kwargs)


def test_server_cli_refuses_a_negative_interval_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "rehost.cli.main", "server", "--data-dir", str(tmp_path),
                           "--snapshot-interval", "-3"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "rehost: error: the snapshot interval must be 0 (off) or a positive number of seconds, not -3"]


@pytest.mark.parametrize("name, value, message", [
    ("REHOST_AGENT_LOGS_MAX_LINES", "ten", "REHOST_AGENT_LOGS_MAX_LINES='ten' is not an integer"),
    ("REHOST_AGENT_METRICS_RETENTION", "1d", "REHOST_AGENT_METRICS_RETENTION='1d' is not a number"),
    ("REHOST_PORT", "80a", "REHOST_PORT='80a' is not an integer"),
    ("REHOST_LAUNCH_BOOT_TIMEOUT", "nan", "REHOST_LAUNCH_BOOT_TIMEOUT='nan' is not a finite number"),
])
def test_a_variable_that_is_no_number_is_one_clear_line(tmp_path: Path, name: str, value: str, message: str) -> None:
    import os

    proc = subprocess.run([sys.executable, "-m", "rehost.cli.main", "server", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, name: value})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"rehost: error: {message}"]
