"""Jobs: the list and a job's details with its log, both refreshed live while jobs run."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from rehost.console import present
from rehost.console.core import Ctx, Refused

STATUS_TONES = {"PENDING": "pending", "STARTED": "progress", "COMPLETED": "success"}
LAUNCH_TONES = {"PENDING": "pending", "IN_PROGRESS": "progress", "LAUNCHED": "success", "FAILED": "error",
                "TERMINATED": "neutral"}
FAIL_EVENTS = {"CLEANUP_FAIL", "SNAPSHOT_FAIL", "CONVERSION_FAIL", "LAUNCH_FAILED", "JOB_CANCEL"}


def job_row(job: dict[str, Any]) -> dict[str, Any]:
    """What the job tables show of a job: its words, status badge tone and whether a server failed."""
    servers = job.get("participatingServers") or []
    failed = any(p.get("launchStatus") == "FAILED" for p in servers)
    status = job.get("status", "PENDING")
    return {
        "id": job["jobID"], "type": job.get("type", ""), "initiated": present.JOB_INITIATED.get(job.get("initiatedBy", ""), ""),
        "status": status.capitalize(), "tone": "error" if failed and status == "COMPLETED" else STATUS_TONES.get(status, "neutral"),
        "servers": len(servers), "created": present.when(job.get("creationDateTime")),
        "ended": present.when(job.get("endDateTime")) if job.get("endDateTime") else "—",
        "failed": failed,
    }


def jobs(ctx: Ctx) -> Response:
    items = ctx.call("DescribeJobs", maxResults=100)["items"]
    return ctx.render("jobs.html", nav="jobs", jobs=[job_row(j) for j in items])


def job_detail(ctx: Ctx) -> Response:
    job_id = ctx.request.path_params["job_id"]
    items = ctx.call("DescribeJobs", filters={"jobIDs": [job_id]})["items"]
    if not items:
        raise Refused("ResourceNotFoundException", f"Job {job_id} not found.")
    job = items[0]
    log = ctx.call("DescribeJobLogItems", jobID=job_id)["items"]
    entries = [{
        "when": present.when(item.get("logDateTime")), "event": present.JOB_EVENT_LABELS.get(item.get("event", ""), item.get("event", "")),
        "code": item.get("event", ""), "fail": item.get("event") in FAIL_EVENTS,
        "server": (item.get("eventData") or {}).get("sourceServerID", ""),
        "detail": (item.get("eventData") or {}).get("rawError") or (item.get("eventData") or {}).get("targetInstanceID")
        or (item.get("eventData") or {}).get("conversionServerID") or "",
    } for item in log]
    servers = [{"id": p["sourceServerID"], "status": p.get("launchStatus", ""),
                "tone": LAUNCH_TONES.get(p.get("launchStatus", ""), "neutral"),
                "instance": p.get("launchedEc2InstanceID") or ""} for p in job.get("participatingServers") or []]
    return ctx.render("job.html", nav="jobs", job=job_row(job), servers=servers, log=entries,
                      running=job.get("status") != "COMPLETED")


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/jobs", jobs, ["GET"]),
    ("/jobs/{job_id}", job_detail, ["GET"]),
]
