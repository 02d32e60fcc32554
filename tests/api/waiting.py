"""Waiting for asynchronous outcomes of the control plane (jobs), with a deadline instead of sleeps."""

from __future__ import annotations

import time
from typing import Any


def wait_job(mgn: Any, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The job once it is COMPLETED; AssertionError naming its last status if it is not within `timeout`."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = mgn.describe_jobs(filters={"jobIDs": [job_id]})["items"][0]
        if job["status"] == "COMPLETED":
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job.get('status')} after {timeout} s")


def log_events(mgn: Any, job_id: str) -> list[dict[str, Any]]:
    return list(mgn.describe_job_log_items(jobID=job_id)["items"])
