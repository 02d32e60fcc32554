"""A launch's work files go when its job ends, and those a crash left go at the next start-up.

A real `rehost server`; the source server's snapshot (a disk of zeros, taken for real in its chunk store)
fails conversion, so the job ends quickly with work files behind it, had nothing removed them.
"""

from __future__ import annotations

from api.waiting import wait_job

from .conftest import served


def test_a_jobs_work_files_go_when_it_ends_and_a_crashs_at_start_up() -> None:
    with served("--job-snapshot-timeout", "1") as (server, mgn, agent):
        sid = agent.register("zeros")["sourceServerID"]
        agent.report_synced(sid)
        job = wait_job(mgn, mgn.start_test(sourceServerIDs=[sid])["job"]["jobID"], timeout=120)
        events = [i["event"] for i in mgn.describe_job_log_items(jobID=job["jobID"])["items"]]
        assert "CONVERSION_START" in events and "CONVERSION_FAIL" in events, events  # it had work files
        work = server.data_dir / "work"
        assert work.is_dir() and list(work.iterdir()) == []

        left = work / f"{job['jobID']}-{sid}-crashed"  # as a crash mid-conversion leaves it
        left.mkdir()
        (left / "snapshot.raw").write_bytes(b"\0" * 4096)
        server.restart()
        assert list(work.iterdir()) == []
