"""Jobs: DescribeJobs, DescribeJobLogItems, DeleteJob (jobs are created by `rehost.api.mgn.lifecycle`)."""

from __future__ import annotations

from typing import Any

from rehost.api.mgn.base import MgnBase, page, parse_date
from rehost.db import repo
from rehost.domain.jobs import JobStatus
from rehost.errors import Conflict


class JobOps(MgnBase):
    """Mixin of `MgnService`: the job operations, named after them."""

    def describe_jobs(self, filters: dict[str, Any] | None = None, maxResults: int | None = None,
                      nextToken: str | None = None) -> dict[str, Any]:
        filters = filters or {}
        limit = maxResults or 1000
        from_date = parse_date(filters.get("fromDate"), "filters.fromDate")
        to_date = parse_date(filters.get("toDate"), "filters.toDate")
        with self.store.read() as conn:
            rows = repo.query_jobs(conn, ids=filters.get("jobIDs"), from_date=from_date, to_date=to_date,
                                   before_seq=repo.decode_token(nextToken), limit=limit + 1)
            items = [dict(doc, tags=repo.get_tags(conn, doc["arn"])) for _, doc in rows[:limit]]
        return page(items, rows, limit)

    def describe_job_log_items(self, jobID: str, maxResults: int | None = None, nextToken: str | None = None) -> dict[str, Any]:
        limit = maxResults or 1000
        with self.store.read() as conn:
            repo.load_job(conn, jobID)
            rows = repo.log_items(conn, jobID, after_seq=repo.decode_token(nextToken), limit=limit + 1)
        return page([doc for _, doc in rows[:limit]], rows, limit)

    def delete_job(self, jobID: str) -> dict[str, Any]:
        with self.store.transaction() as conn:
            job = repo.load_job(conn, jobID)
            if job["status"] != JobStatus.COMPLETED.value:
                raise Conflict(f"Job {jobID} is {job['status']}; only completed jobs can be deleted.",
                               resource_id=jobID, resource_type="JOB")
            repo.delete_job(conn, jobID)
            repo.remove_tags(conn, job["arn"])
        return {}
