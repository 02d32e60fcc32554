"""Settings: read once from flags and ``REHOST_*`` variables into a frozen object.

Every component receives the settings it needs in its constructor; nothing else reads the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Quotas:
    """MGN's service quotas (mgn-reference.md §5.4); active source servers is adjustable."""

    active_source_servers: int = 150
    concurrent_jobs: int = 20
    jobs_per_server: int = 1
    servers_per_job: int = 200
    non_archived_source_servers: int = 4000


@dataclass(frozen=True)
class Settings:
    """Everything the control plane needs to run."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    region: str = "us-east-1"
    database_url: str | None = None
    quotas: Quotas = field(default_factory=Quotas)
    replication_host: str = "127.0.0.1"
    replication_port: int = 1500
    # The address agents are told to use for the control plane and replication servers, when the
    # agents see this host under another name (a VM reaching the host through QEMU's guestfwd).
    advertised_replication_host: str | None = None
    job_snapshot_timeout: float = 600.0
    # Seconds a launched guest has to reach user space before its launch fails (TCG boots are slow).
    launch_boot_timeout: float = 300.0
    # The built-in target, named "local" (`rehost.launch.placement`): rehost's own QEMU on this host, or a
    # libvirt URL; `rehost target add` adds more.
    target: str = "qemu:///local"
    accel: str = "auto"
    # Requests per second per access key on the public API (bursts of twice that); 0 disables throttling.
    api_rate_limit: float = 100.0
    # How often the control plane restarts dead replication servers and looks for silent agents, and how
    # long an agent may stay silent before its replication is STALLED (AGENT_NOT_SEEN).
    monitor_interval: float = 5.0
    agent_silence_seconds: float = 60.0
    # How often replication servers snapshot a source server's staging volumes while they change.
    snapshot_interval: float = 600.0
    # What the control plane keeps of what agents send, pruned by its monitor: metrics for 24 h and at most
    # 1440 rows per server (one a minute, the agents' interval), log lines for 72 h and at most 10,000 per
    # server (finished agent commands as long as the logs). A terminated instance stays describable for an
    # hour, as on EC2, then its record and console output go (its disks go when it is terminated).
    agent_metrics_retention: float = 86400.0
    agent_metrics_max_rows: int = 1440
    agent_logs_retention: float = 259200.0
    agent_logs_max_lines: int = 10000
    terminated_instance_retention: float = 3600.0

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'rehost.db'}"


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"REHOST_{name}", default)


def _num(given: float | None, name: str, default: float, kind: type = float) -> Any:
    """A flag's value if given, else ``REHOST_<name>`` read as ``kind``, else ``default``: a value that is no
    number is an InvalidInput naming the variable, never a traceback."""
    if given is not None:
        return given
    raw = _env(name)
    if not raw:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        from rehost.errors import InvalidInput

        raise InvalidInput(f"REHOST_{name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
    if value != value or value in (float("inf"), float("-inf")):
        from rehost.errors import InvalidInput

        raise InvalidInput(f"REHOST_{name}={raw!r} is not a finite number")
    return value


def load_settings(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    host: str | None = None,
    port: int | None = None,
    region: str | None = None,
    database_url: str | None = None,
    active_source_servers: int | None = None,
    replication_port: int | None = None,
    advertised_replication_host: str | None = None,
    accel: str | None = None,
    api_rate_limit: float | None = None,
    monitor_interval: float | None = None,
    agent_silence_seconds: float | None = None,
    job_snapshot_timeout: float | None = None,
    snapshot_interval: float | None = None,
    launch_boot_timeout: float | None = None,
    target: str | None = None,
) -> Settings:
    """Merge flags (given here) over ``REHOST_*`` variables over defaults."""
    raw_dir = data_dir or _env("DATA_DIR")
    if not raw_dir:
        from rehost.errors import InvalidInput

        raise InvalidInput("no data directory: pass --data-dir or set REHOST_DATA_DIR")
    quotas = Quotas(active_source_servers=active_source_servers or _num(None, "MAX_ACTIVE_SOURCE_SERVERS", 150, int))
    settings = Settings(
        data_dir=Path(raw_dir).resolve(),
        host=host or _env("HOST", "127.0.0.1") or "127.0.0.1",
        port=_num(port, "PORT", 8080, int),
        region=region or _env("REGION", "us-east-1") or "us-east-1",
        database_url=database_url or _env("DATABASE_URL"),
        quotas=quotas,
        replication_port=_num(replication_port, "REPLICATION_PORT", 1500, int),
        advertised_replication_host=advertised_replication_host or _env("ADVERTISED_REPLICATION_HOST"),
        accel=accel or _env("ACCEL", "auto") or "auto",
        api_rate_limit=_num(api_rate_limit, "API_RATE_LIMIT", 100),
        monitor_interval=_num(monitor_interval, "MONITOR_INTERVAL", 5),
        agent_silence_seconds=_num(agent_silence_seconds, "AGENT_SILENCE_SECONDS", 60),
        job_snapshot_timeout=_num(job_snapshot_timeout, "JOB_SNAPSHOT_TIMEOUT", 600),
        snapshot_interval=_num(snapshot_interval, "SNAPSHOT_INTERVAL", 600),
        launch_boot_timeout=_num(launch_boot_timeout, "LAUNCH_BOOT_TIMEOUT", 300),
        target=target or _env("TARGET", "qemu:///local") or "qemu:///local",
    )
    settings = replace(
        settings,
        agent_metrics_retention=_num(None, "AGENT_METRICS_RETENTION", 86400),
        agent_metrics_max_rows=_num(None, "AGENT_METRICS_MAX_ROWS", 1440, int),
        agent_logs_retention=_num(None, "AGENT_LOGS_RETENTION", 259200),
        agent_logs_max_lines=_num(None, "AGENT_LOGS_MAX_LINES", 10000, int),
        terminated_instance_retention=_num(None, "TERMINATED_INSTANCE_RETENTION", 3600))
    _check_durations(settings)
    return settings


def _check_durations(settings: Settings) -> None:
    from rehost.errors import InvalidInput
    from rehost.targets.registry import parse_target_url

    parse_target_url(settings.target)

    positive = {"monitor interval": settings.monitor_interval, "agent silence": settings.agent_silence_seconds,
                "job snapshot timeout": settings.job_snapshot_timeout,
                "launch boot timeout": settings.launch_boot_timeout}
    for name, value in positive.items():
        if not value > 0:
            raise InvalidInput(f"the {name} must be a positive number of seconds, not {value:g}")
    if not settings.snapshot_interval >= 0:
        raise InvalidInput(f"the snapshot interval must be 0 (off) or a positive number of seconds, "
                           f"not {settings.snapshot_interval:g}")
    retention = {"agent metrics retention": settings.agent_metrics_retention,
                 "agent logs retention": settings.agent_logs_retention,
                 "terminated instance retention": settings.terminated_instance_retention,
                 "agent metrics row limit": settings.agent_metrics_max_rows,
                 "agent log line limit": settings.agent_logs_max_lines}
    for name, value in retention.items():
        if not value >= 0:
            raise InvalidInput(f"the {name} must not be negative, not {value:g}")
    if not settings.api_rate_limit >= 0:
        raise InvalidInput(f"the API rate limit must be 0 (off) or positive, not {settings.api_rate_limit:g}")
