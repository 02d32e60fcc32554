"""Settings: read once from flags and ``REHOST_*`` variables into a frozen object.

Every component receives the settings it needs in its constructor; nothing else reads the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


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
    target: str = "qemu"
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
) -> Settings:
    """Merge flags (given here) over ``REHOST_*`` variables over defaults."""
    raw_dir = data_dir or _env("DATA_DIR")
    if not raw_dir:
        from rehost.errors import InvalidInput

        raise InvalidInput("no data directory: pass --data-dir or set REHOST_DATA_DIR")
    quota_env = _env("MAX_ACTIVE_SOURCE_SERVERS")
    quotas = Quotas(active_source_servers=active_source_servers or int(quota_env or 150))
    settings = Settings(
        data_dir=Path(raw_dir).resolve(),
        host=host or _env("HOST", "127.0.0.1") or "127.0.0.1",
        port=port if port is not None else int(_env("PORT", "8080") or 8080),
        region=region or _env("REGION", "us-east-1") or "us-east-1",
        database_url=database_url or _env("DATABASE_URL"),
        quotas=quotas,
        replication_port=replication_port if replication_port is not None else int(_env("REPLICATION_PORT", "1500") or 1500),
        advertised_replication_host=advertised_replication_host or _env("ADVERTISED_REPLICATION_HOST"),
        accel=accel or _env("ACCEL", "auto") or "auto",
        api_rate_limit=api_rate_limit if api_rate_limit is not None else float(_env("API_RATE_LIMIT", "100") or 100),
        monitor_interval=monitor_interval if monitor_interval is not None else float(_env("MONITOR_INTERVAL", "5") or 5),
        agent_silence_seconds=agent_silence_seconds if agent_silence_seconds is not None
        else float(_env("AGENT_SILENCE_SECONDS", "60") or 60),
        job_snapshot_timeout=job_snapshot_timeout if job_snapshot_timeout is not None
        else float(_env("JOB_SNAPSHOT_TIMEOUT", "600") or 600),
        snapshot_interval=snapshot_interval if snapshot_interval is not None
        else float(_env("SNAPSHOT_INTERVAL", "600") or 600),
        launch_boot_timeout=launch_boot_timeout if launch_boot_timeout is not None
        else float(_env("LAUNCH_BOOT_TIMEOUT", "300") or 300),
    )
    settings = replace(
        settings,
        agent_metrics_retention=float(_env("AGENT_METRICS_RETENTION", "86400") or 86400),
        agent_metrics_max_rows=int(_env("AGENT_METRICS_MAX_ROWS", "1440") or 1440),
        agent_logs_retention=float(_env("AGENT_LOGS_RETENTION", "259200") or 259200),
        agent_logs_max_lines=int(_env("AGENT_LOGS_MAX_LINES", "10000") or 10000),
        terminated_instance_retention=float(_env("TERMINATED_INSTANCE_RETENTION", "3600") or 3600))
    _check_durations(settings)
    return settings


def _check_durations(settings: Settings) -> None:
    from rehost.errors import InvalidInput

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
