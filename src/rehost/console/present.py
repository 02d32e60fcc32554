"""How the console words and shapes MGN records: lifecycle labels, replication status, next steps, alerts.

Pure functions of the API's dicts (no I/O), so the pages and their live fragments agree and tests can
check the wording directly.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from rehost.domain.lifecycle import CONSOLE_LABELS, LifeCycleState

# MGN's console raises a "Lagging" alert when the lag grows; the threshold is not documented, so rehost
# uses five minutes (a healthy continuous replication stays within seconds).
LAG_ALERT_SECONDS = 300

_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")

REPLICATION_LABELS = {
    "STOPPED": "Stopped", "INITIATING": "Initiating", "INITIAL_SYNC": "Initial sync", "BACKLOG": "Backlog",
    "CREATING_SNAPSHOT": "Creating snapshot", "CONTINUOUS": "Healthy", "PAUSED": "Paused", "RESCAN": "Rescanning",
    "STALLED": "Stalled", "DISCONNECTED": "Disconnected", "PENDING_SNAPSHOT_SHIPPING": "Pending snapshot shipping",
    "SHIPPING_SNAPSHOT": "Shipping snapshot",
}

# Badge colours: the console's few tones (see console.css .badge-*).
LIFECYCLE_TONES = {
    "NOT_READY": "pending", "READY_FOR_TEST": "info", "TESTING": "progress", "READY_FOR_CUTOVER": "info",
    "CUTTING_OVER": "progress", "CUTOVER": "success", "DISCONNECTED": "neutral",
}
REPLICATION_TONES = {
    "CONTINUOUS": "success", "STALLED": "error", "DISCONNECTED": "neutral", "STOPPED": "neutral", "PAUSED": "warning",
    "INITIATING": "progress", "INITIAL_SYNC": "progress", "BACKLOG": "warning", "RESCAN": "progress",
    "CREATING_SNAPSHOT": "progress",
}

NEXT_STEPS = {
    "NOT_READY": "Wait for initial sync to complete",
    "READY_FOR_TEST": "Launch test instance",
    "TESTING": "Complete testing and mark as ready for cutover",
    "READY_FOR_CUTOVER": "Launch cutover instance",
    "CUTTING_OVER": "Finalize cutover",
    "CUTOVER": "Mark as archived",
    "DISCONNECTED": "Mark as archived",
}

JOB_EVENT_LABELS = {
    "JOB_START": "Job started", "SERVER_SKIPPED": "Server skipped", "CLEANUP_START": "Cleanup started",
    "CLEANUP_END": "Cleanup finished", "CLEANUP_FAIL": "Cleanup failed", "SNAPSHOT_START": "Snapshot started",
    "SNAPSHOT_END": "Snapshot finished", "SNAPSHOT_FAIL": "Snapshot failed",
    "USING_PREVIOUS_SNAPSHOT": "Using previous snapshot", "CONVERSION_START": "Conversion started",
    "CONVERSION_END": "Conversion finished", "CONVERSION_FAIL": "Conversion failed",
    "LAUNCH_START": "Launch started", "LAUNCH_FAILED": "Launch failed", "JOB_CANCEL": "Job canceled",
    "JOB_END": "Job ended",
}
JOB_INITIATED = {"START_TEST": "Launch test instances", "START_CUTOVER": "Launch cutover instances",
                 "TERMINATE": "Terminate launched instances", "DIAGNOSTIC": "Diagnostic"}


def lifecycle_label(state: str | None) -> str:
    """MGN's console words for a lifecycle state ("Ready for testing"); unknown states as given."""
    try:
        return CONSOLE_LABELS[LifeCycleState(state or "")]
    except ValueError:
        return (state or "Unknown").replace("_", " ").capitalize()


def duration_seconds(iso: str | None) -> float | None:
    """Seconds in an ISO-8601 duration as MGN reports them (``PT1H2M3S``, ``P1DT4S``); None if absent."""
    if not iso:
        return None
    m = _DURATION.match(iso)
    if not m:
        return None
    days, hours, minutes, secs = m.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs or 0)


def human_duration(seconds: float | None) -> str:
    """A short duration for people: "3s", "4m 10s", "2h 5m", "3d 4h"."""
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def human_bytes(n: int | float | None) -> str:
    if isinstance(n, bool) or not isinstance(n, (int, float)):  # None, or absent (a template's Undefined)
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def when(text: str | None) -> str:
    """An MGN timestamp as ``YYYY-MM-DD hh:mm:ss UTC``."""
    if not text:
        return "—"
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _eta_seconds(eta: str | None, now: datetime) -> float | None:
    if not eta:
        return None
    try:
        return max(0.0, (datetime.fromisoformat(eta.replace("Z", "+00:00")) - now).total_seconds())
    except ValueError:
        return None


def replication(server: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """The data replication column: label, tone, progress (0-100 or None), ETA, lag and per-disk rows."""
    now = now or datetime.now(UTC)
    info = server.get("dataReplicationInfo") or {}
    state = info.get("dataReplicationState") or "STOPPED"
    disks = []
    total = done = 0
    for d in info.get("replicatedDisks") or []:
        t, r = int(d.get("totalStorageBytes") or 0), int(d.get("replicatedStorageBytes") or 0)
        total, done = total + t, done + r
        disks.append({"name": d.get("deviceName", "?"), "total": human_bytes(t), "replicated": human_bytes(r),
                      "backlog": human_bytes(d.get("backloggedStorageBytes") or 0),
                      "percent": _percent(r, t)})
    lag = duration_seconds(info.get("lagDuration"))
    syncing = state in ("INITIATING", "INITIAL_SYNC", "RESCAN") or (total and done < total)
    return {
        "state": state,
        "label": REPLICATION_LABELS.get(state, state.replace("_", " ").capitalize()),
        "tone": REPLICATION_TONES.get(state, "neutral"),
        "percent": _percent(done, total) if syncing and total else None,
        "eta": human_duration(_eta_seconds(info.get("etaDateTime"), now)) if syncing and info.get("etaDateTime") else None,
        "lag": human_duration(lag) if lag is not None else None,
        "last_snapshot": when(info.get("lastSnapshotDateTime")) if info.get("lastSnapshotDateTime") else None,
        "error": (info.get("dataReplicationError") or {}).get("error"),
        "raw_error": (info.get("dataReplicationError") or {}).get("rawError"),
        "disks": disks,
        "steps": (info.get("dataReplicationInitiation") or {}).get("steps") or [],
    }


def _percent(done: int, total: int) -> int:
    return int(done * 100 // total) if total else 0


def alerts(server: dict[str, Any]) -> list[dict[str, str]]:
    """The alert badges of a server: stalled replication, a replication error, lagging."""
    info = server.get("dataReplicationInfo") or {}
    out: list[dict[str, str]] = []
    if info.get("dataReplicationState") == "STALLED":
        out.append({"label": "Stalled", "tone": "error"})
    elif (info.get("dataReplicationError") or {}).get("error"):
        out.append({"label": info["dataReplicationError"]["error"].replace("_", " ").capitalize(), "tone": "error"})
    lag = duration_seconds(info.get("lagDuration"))
    if lag is not None and lag > LAG_ALERT_SECONDS and info.get("dataReplicationState") != "DISCONNECTED":
        out.append({"label": "Lagging", "tone": "warning"})
    return out


def server_row(server: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """Everything the source servers table shows for one server."""
    props = server.get("sourceProperties") or {}
    hints = props.get("identificationHints") or {}
    state = (server.get("lifeCycle") or {}).get("state") or "NOT_READY"
    return {
        "id": server["sourceServerID"],
        "arn": server.get("arn", ""),
        "hostname": hints.get("hostname") or hints.get("fqdn") or server.get("userProvidedID") or server["sourceServerID"],
        "fqdn": hints.get("fqdn") or "",
        "state": state,
        "lifecycle": lifecycle_label(state),
        "lifecycle_tone": LIFECYCLE_TONES.get(state, "neutral"),
        "archived": bool(server.get("isArchived")),
        "replication": replication(server, now),
        "next_step": "—" if server.get("isArchived") else NEXT_STEPS.get(state, "—"),
        "alerts": alerts(server),
        "launched": (server.get("launchedInstance") or {}).get("ec2InstanceID"),
    }


def timeline(server: dict[str, Any]) -> list[dict[str, Any]]:
    """The migration lifecycle timeline of the dashboard: each stage with its status and date."""
    life = server.get("lifeCycle") or {}
    state = life.get("state") or "NOT_READY"
    order = ["NOT_READY", "READY_FOR_TEST", "TESTING", "READY_FOR_CUTOVER", "CUTTING_OVER", "CUTOVER"]
    test = life.get("lastTest") or {}
    cut = life.get("lastCutover") or {}
    dates = {
        "NOT_READY": life.get("addedToServiceDateTime"),
        "TESTING": (test.get("initiated") or {}).get("apiCallDateTime"),
        "READY_FOR_CUTOVER": (test.get("finalized") or {}).get("apiCallDateTime"),
        "CUTTING_OVER": (cut.get("initiated") or {}).get("apiCallDateTime"),
        "CUTOVER": (cut.get("finalized") or {}).get("apiCallDateTime"),
    }
    if state in order:
        reached = order.index(state)
    else:  # disconnected: the stages it went through are those with a date, up to the last one
        dated = [i for i, st in enumerate(order) if dates.get(st)]
        reached = (max(dated) + 1) if dated else 0
    stages = []
    for i, st in enumerate(order):
        status = "done" if i < reached else "current" if i == reached and state in order else "todo"
        stages.append({"label": lifecycle_label(st), "status": status, "date": when(dates.get(st)) if dates.get(st) else ""})
    if state == "DISCONNECTED":
        stages.append({"label": "Disconnected", "status": "current", "date": ""})
    return stages
