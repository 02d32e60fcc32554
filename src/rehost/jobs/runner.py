"""The job runner: executes LAUNCH and TERMINATE jobs step by step and writes MGN's job log.

Per participating server, a launch job logs, in MGN's order: CLEANUP_START/END/FAIL (the previous test
instance), SNAPSHOT_START/END/FAIL or USING_PREVIOUS_SNAPSHOT, CONVERSION_START/END/FAIL, LAUNCH_START or
LAUNCH_FAILED; the job itself JOB_START first and JOB_END last. After LAUNCH_START the server's launch stays
IN_PROGRESS until the guest has booted (LAUNCHED, firstBoot SUCCEEDED); one that does not boot within
``boot_timeout`` is terminated and logged LAUNCH_FAILED with its last console lines (firstBoot STOPPED). A
step without an implementation fails the server honestly, with the reason in the log.

Several control-plane processes may share the database (``rehost.db.cluster``). A job is run by the one
process that claims it (``repo.claim_job``: PENDING to STARTED with its owner, one conditional UPDATE): the
process that created it, at once if it has a free worker, else any process's poller (every
``poll_interval``, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL). A STARTED job whose owner is no longer alive (a
restart, kill -9, a lost host) is taken over by whichever process sees it first and failed as a restart
fails it: a JOB_CANCEL item, its unfinished launches FAILED, its open snapshot requests and work files
gone; none is ever left STARTED. A process that finds its job taken over (its connection to the database
was lost meanwhile) stops working on it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rehost import ids
from rehost.db import repo
from rehost.db.cluster import Cluster
from rehost.db.store import Store
from rehost.domain.boot import LEGACY_BIOS, choose_boot_mode
from rehost.domain.jobs import InitiatedBy, JobLogEvent, JobStatus, JobType, LaunchStatus
from rehost.errors import NotFound, RehostError
from rehost.jobs.interfaces import (
    BootResult,
    Converter,
    Launcher,
    LaunchRequest,
    SnapshotProvider,
    SnapshotRef,
)

log = logging.getLogger("rehost.jobs")


class StepFailed(Exception):
    def __init__(self, event: JobLogEvent, reason: str) -> None:
        super().__init__(reason)
        self.event = event
        self.reason = reason


class JobTakenOver(Exception):
    """Another process took this job over (it found this one dead): stop working on it."""


class JobRunner:
    def __init__(self, store: Store, work_dir: Path, *, snapshots: SnapshotProvider | None = None,
                 converter: Converter | None = None, launcher: Launcher | None = None,
                 snapshot_timeout: float = 600.0, instance_sizer: Any = None, max_workers: int = 4,
                 boot_timeout: float = 300.0, cluster: Cluster | None = None, poll_interval: float = 2.0) -> None:
        self.store = store
        self.work_dir = work_dir
        self.snapshots = snapshots
        self.converter = converter
        self.launcher = launcher
        self.snapshot_timeout = snapshot_timeout
        self.boot_timeout = boot_timeout  # seconds a launched guest has to reach user space
        self.instance_sizer = instance_sizer
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="job")
        self._lock = threading.Lock()
        self.max_workers = max_workers
        # Without a cluster (a runner used on its own, as in tests) this runner is the only one it knows of.
        self.cluster = cluster
        self.owner = cluster.id if cluster is not None else f"{socket.gethostname()[:40]}:{os.getpid()}:runner"
        self.poll_interval = poll_interval
        self._queued = 0  # tasks in the pool, running or waiting for a worker
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- scheduling -------------------------------------------------------------------------------------

    def submit(self, job_id: str, job: dict[str, Any] | None = None) -> None:
        """Run ``job_id`` on this process's pool: claimed when a worker takes it up (unless ``job``, already
        claimed, is given), so a job another process claimed first is left to that one."""
        with self._lock:
            self._queued += 1
        self._pool.submit(self._run_safely, job_id, job)

    def start(self) -> None:
        """Recover what dead processes left, then look for work every ``poll_interval``."""
        self.recover()
        self._poller = threading.Thread(target=self._poll, name="job-poller", daemon=True)
        self._poller.start()

    def recover(self) -> None:
        """Fail the jobs whose process died (a restart: this one's former self) and remove the work files they
        left; run the jobs still waiting."""
        self._remove_orphaned_work()
        self.take_over()
        with self.store.read() as conn:
            pending = repo.query_jobs(conn, statuses=[JobStatus.PENDING.value])
        for _, job in reversed(pending):
            self.submit(job["jobID"])

    def _alive(self, owner: str | None) -> bool:
        if self.cluster is not None:
            return self.cluster.is_alive(owner)
        return owner == self.owner

    def take_over(self) -> list[str]:
        """Fail, as a restart does, every STARTED job whose process is no longer alive; returns their IDs."""
        with self.store.read() as conn:
            started = repo.started_jobs(conn)
        alive: dict[str | None, bool] = {}
        taken: list[str] = []
        for job_id, owner in started:
            if owner not in alive:
                alive[owner] = self._alive(owner)
            if alive[owner]:
                continue
            with self.store.transaction() as conn:
                if not repo.take_over_job(conn, job_id, owner, self.owner):
                    continue  # another process got there first
            log.warning("job %s: its process %s stopped; failing it as a restart does", job_id, owner or "(unknown)")
            self._cancel(job_id)
            taken.append(job_id)
        return taken

    def _cancel(self, job_id: str) -> None:
        reason = "The job was interrupted by a restart of the control plane (the process running it stopped)."
        self._log(job_id, JobLogEvent.JOB_CANCEL, rawError=reason)
        with self.store.transaction() as conn:
            doc = repo.load_job(conn, job_id)
            for p in doc["participatingServers"]:
                if p["launchStatus"] in (LaunchStatus.PENDING.value, LaunchStatus.IN_PROGRESS.value):
                    p["launchStatus"] = LaunchStatus.FAILED.value
            doc["status"] = JobStatus.COMPLETED.value
            doc["endDateTime"] = ids.iso(ids.utcnow())
            repo.save_job(conn, doc)
            # nobody waits for its snapshot requests any more: an agent coming back must not act on them
            repo.fail_snapshot_requests(conn, [p["sourceServerID"] for p in doc["participatingServers"]],
                                        "the control-plane process that requested it stopped")
        self._remove_work(f"{job_id}-")

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                # With SQLite this process is the only server: what its former self left was failed at
                # start-up, and a job another owner runs meanwhile is a runner of its own (a tool, a test).
                if self.cluster is not None and not self.cluster.sole:
                    self.take_over()
                self._claim_waiting()
            except Exception:  # the poller must outlive any single failure (a database restart)
                log.exception("job poll failed")

    def _claim_waiting(self) -> None:
        """Claim as many PENDING jobs as this process has idle workers (jobs another process created, or
        whose creator died before a worker of its own took them up)."""
        with self._lock:
            free = self.max_workers - self._queued
        if free <= 0:
            return
        claimed: list[dict[str, Any]] = []
        with self.store.transaction() as conn:
            for job_id in repo.claimable_jobs(conn, free):
                job = repo.claim_job(conn, job_id, self.owner)
                if job is not None:
                    claimed.append(job)
        for job in claimed:
            log.info("job %s claimed by this process (%s)", job["jobID"], self.owner)
            self.submit(job["jobID"], job)

    def shutdown(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _remove_orphaned_work(self) -> None:
        """Delete the work directories left by jobs no live process runs (all of them when this process is
        the only one)."""
        if not self.work_dir.is_dir():
            return
        with self.store.read() as conn:
            running = [job_id for job_id, owner in repo.started_jobs(conn) if owner != self.owner and self._alive(owner)]
        for path in self.work_dir.iterdir():
            if not any(path.name.startswith(f"{job_id}-") for job_id in running):
                shutil.rmtree(path, ignore_errors=True)

    def _remove_work(self, prefix: str) -> None:
        """Delete the work directories (exported raw disk, converted image, kernel) whose names start with
        ``prefix``: a launch's when it ends, whatever its outcome (the instance holds its own link to the
        converted image); all of them at start-up."""
        if not self.work_dir.is_dir():
            return
        for path in self.work_dir.iterdir():
            if path.name.startswith(prefix):
                shutil.rmtree(path, ignore_errors=True)

    # -- execution --------------------------------------------------------------------------------------

    def _run_safely(self, job_id: str, job: dict[str, Any] | None = None) -> None:
        try:
            self.run(job_id, job)
        except JobTakenOver:
            log.warning("job %s was taken over by another process; this one stops working on it", job_id)
        except Exception:  # a fault in the runner itself must not leave the job STARTED
            log.exception("job %s failed", job_id)
            try:
                self._log(job_id, JobLogEvent.JOB_END, rawError="internal error in the job runner")
                self._finish(job_id)
            except JobTakenOver:
                pass
        finally:
            with self._lock:
                self._queued -= 1

    def run(self, job_id: str, job: dict[str, Any] | None = None) -> None:
        """Claim and run ``job_id`` (``job``: already claimed by this runner); nothing if another has it."""
        if job is None:
            with self.store.transaction() as conn:
                job = repo.claim_job(conn, job_id, self.owner)
            if job is None:
                return
        self._log(job_id, JobLogEvent.JOB_START)
        for p in job["participatingServers"]:
            server_id = p["sourceServerID"]
            self._set_launch_status(job_id, server_id, LaunchStatus.IN_PROGRESS)
            try:
                if job["type"] == JobType.TERMINATE.value:
                    self._terminate_server(job_id, server_id)
                else:
                    self._launch_server(job, server_id)
            except StepFailed as exc:
                self._log(job_id, exc.event, sourceServerID=server_id, rawError=exc.reason)
                self._set_launch_status(job_id, server_id, LaunchStatus.FAILED)
            finally:
                self._remove_work(f"{job_id}-{server_id}-")
        self._log(job_id, JobLogEvent.JOB_END)
        self._finish(job_id)

    def _finish(self, job_id: str) -> None:
        with self.store.transaction() as conn:
            job = self._own_job(conn, job_id)
            job["status"] = JobStatus.COMPLETED.value
            job["endDateTime"] = ids.iso(ids.utcnow())
            repo.save_job(conn, job)

    def _launch_server(self, job: dict[str, Any], server_id: str) -> None:
        job_id = job["jobID"]
        with self.store.read() as conn:
            server = repo.load_server(conn, server_id)
        previous = server.get("launchedInstance") or {}
        if job["initiatedBy"] == InitiatedBy.START_TEST.value and previous.get("ec2InstanceID"):
            self._cleanup_previous(job_id, server_id, previous["ec2InstanceID"])
        snapshot = self._snapshot(job_id, server_id)
        disk = self._convert(job_id, server, snapshot)
        if self.launcher is None:
            raise StepFailed(JobLogEvent.LAUNCH_FAILED, "No launch target is configured on this control plane.")
        instance_type, vcpus, memory_mib = self._size(server)
        boot_mode, why = self._boot_mode(server, disk)
        try:
            result = self.launcher.launch(LaunchRequest(
                source_server_id=server_id, job_id=job_id, instance_type=instance_type, vcpus=vcpus,
                memory_mib=memory_mib, disk=disk, boot_mode=boot_mode))
        except RehostError as exc:
            raise StepFailed(JobLogEvent.LAUNCH_FAILED, exc.message) from exc
        instance_id = result["instanceId"]
        # MGN logs LAUNCH_START with the target instance's ID; the instance exists only once launched. The
        # firmware is rehost's own item of eventData (MGN's shape has no place for it, so only the store
        # keeps it); a LAUNCH_FAILED's rawError names it, and the instance's BootMode shows it.
        self._log(job_id, JobLogEvent.LAUNCH_START, sourceServerID=server_id, targetInstanceID=instance_id,
                  bootMode=f"{boot_mode} ({why})")
        log.info("job %s launched %s for %s (%s) at %s ports %s", job_id, instance_id, server_id, instance_type,
                 result.get("publicIp"), result.get("ports"))
        self._record_launch(job_id, server_id, instance_id, "WAITING", None)
        self._wait_for_boot(job_id, server_id, instance_id, f"{boot_mode} ({why})")
        self._record_launch(job_id, server_id, instance_id, "SUCCEEDED", LaunchStatus.LAUNCHED)

    @staticmethod
    def _boot_mode(server: dict[str, Any], disk: Any) -> tuple[str, str]:
        """The firmware of the launch and why: the launch configuration's bootMode, the source's (the
        agent's registration hint), what the boot disk can boot (`rehost.domain.boot`)."""
        configured = (server.get("_launchConfiguration") or {}).get("bootMode")
        reported = ((server.get("sourceProperties") or {}).get("identificationHints") or {}).get("bootMode")
        return choose_boot_mode(configured, reported, disk.boot_modes or frozenset({LEGACY_BIOS}))

    def _wait_for_boot(self, job_id: str, server_id: str, instance_id: str, firmware: str) -> None:
        """A launch counts only once the guest reached user space (`rehost.launch.bootcheck`); one that
        does not within ``boot_timeout`` is terminated (its console kept) and fails the server's launch."""
        assert self.launcher is not None
        try:
            boot = self.launcher.wait_until_booted(instance_id, self.boot_timeout)
        except RehostError as exc:
            boot = BootResult(False, f"The guest's boot could not be watched: {exc.message}", 0.0)
        if boot.booted:
            log.info("job %s: %s booted in %.0f s (%s)", job_id, instance_id, boot.seconds, boot.signal)
            return
        log.warning("job %s: %s did not boot: %s", job_id, instance_id, boot.signal)
        try:
            self.launcher.fail(instance_id, f"Server.InternalError: {boot.signal}")
        except RehostError as exc:
            log.error("job %s: could not terminate %s after its failed boot: %s", job_id, instance_id, exc)
        self._record_launch(job_id, server_id, instance_id, "STOPPED", None)
        raise StepFailed(JobLogEvent.LAUNCH_FAILED, f"Boot mode {firmware}. {boot.failure_text()}")

    def _record_launch(self, job_id: str, server_id: str, instance_id: str, first_boot: str,
                       status: LaunchStatus | None) -> None:
        with self.store.transaction() as conn:
            self._own_job(conn, job_id)
            server = repo.load_server(conn, server_id, for_update=True)
            server["launchedInstance"] = {"ec2InstanceID": instance_id, "jobID": job_id, "firstBoot": first_boot}
            repo.save_server(conn, server)
            doc = repo.load_job(conn, job_id)
            for p in doc["participatingServers"]:
                if p["sourceServerID"] == server_id:
                    if status is not None:
                        p["launchStatus"] = status.value
                    p["launchedEc2InstanceID"] = instance_id
            repo.save_job(conn, doc)

    def _size(self, server: dict[str, Any]) -> tuple[str, int, int]:
        if self.instance_sizer is None:
            return "t3.micro", 2, 1024
        return self.instance_sizer(server)

    def _cleanup_previous(self, job_id: str, server_id: str, instance_id: str) -> None:
        self._log(job_id, JobLogEvent.CLEANUP_START, sourceServerID=server_id, targetInstanceID=instance_id)
        try:
            if self.launcher is None:
                raise RehostError("No launch target is configured on this control plane.")
            self.launcher.terminate(instance_id)
        except NotFound:
            pass  # terminated long enough ago that EC2 forgot it (`Settings.terminated_instance_retention`)
        except RehostError as exc:
            self._log(job_id, JobLogEvent.CLEANUP_FAIL, sourceServerID=server_id, rawError=exc.message)
            return
        self._log(job_id, JobLogEvent.CLEANUP_END, sourceServerID=server_id, targetInstanceID=instance_id)
        with self.store.transaction() as conn:
            server = repo.load_server(conn, server_id, for_update=True)
            server.pop("launchedInstance", None)
            repo.save_server(conn, server)

    def _snapshot(self, job_id: str, server_id: str) -> SnapshotRef:
        if self.snapshots is None:
            raise StepFailed(JobLogEvent.SNAPSHOT_FAIL, "No snapshot provider is configured on this control plane.")
        self._log(job_id, JobLogEvent.SNAPSHOT_START, sourceServerID=server_id)
        try:
            snap = self.snapshots.take_snapshot(server_id, self.snapshot_timeout)
            self._log(job_id, JobLogEvent.SNAPSHOT_END, sourceServerID=server_id)
            return snap
        except RehostError as exc:
            previous = self.snapshots.latest_snapshot(server_id)
            if previous is None:
                raise StepFailed(JobLogEvent.SNAPSHOT_FAIL, exc.message) from exc
            self._log(job_id, JobLogEvent.SNAPSHOT_FAIL, sourceServerID=server_id, rawError=exc.message)
            self._log(job_id, JobLogEvent.USING_PREVIOUS_SNAPSHOT, sourceServerID=server_id)
            return previous

    def _convert(self, job_id: str, server: dict[str, Any], snapshot: SnapshotRef) -> Any:
        server_id = server["sourceServerID"]
        if self.converter is None:
            raise StepFailed(JobLogEvent.CONVERSION_FAIL, "No converter is configured on this control plane.")
        conversion_server = ids.new_id("i")
        self._log(job_id, JobLogEvent.CONVERSION_START, sourceServerID=server_id, conversionServerID=conversion_server)
        boot = next((d["deviceName"] for d in server["_replicationConfiguration"].get("replicatedDisks", [])
                     if d.get("isBootDisk")), None) or next(iter(snapshot.disks), None)
        if boot is None:
            raise StepFailed(JobLogEvent.CONVERSION_FAIL, "The snapshot has no disk to boot from.")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{job_id}-{server_id}-", dir=self.work_dir))
        try:
            disk = self.converter.convert(snapshot, boot, work)
        except RehostError as exc:
            raise StepFailed(JobLogEvent.CONVERSION_FAIL, exc.message) from exc
        # What conversion changed, one line each (rehost's own member: MGN's eventData has no field for it).
        self._log(job_id, JobLogEvent.CONVERSION_END, sourceServerID=server_id, conversionServerID=conversion_server,
                  conversionNotes=list(getattr(disk, "notes", ())) or None)
        return disk

    def _terminate_server(self, job_id: str, server_id: str) -> None:
        with self.store.read() as conn:
            server = repo.load_server(conn, server_id)
        instance_id = (server.get("launchedInstance") or {}).get("ec2InstanceID")
        self._log(job_id, JobLogEvent.CLEANUP_START, sourceServerID=server_id, targetInstanceID=instance_id)
        if self.launcher is None:
            raise StepFailed(JobLogEvent.CLEANUP_FAIL, "No launch target is configured on this control plane.")
        try:
            if instance_id:
                self.launcher.terminate(instance_id)
        except NotFound:
            pass  # terminated and since forgotten
        except RehostError as exc:
            raise StepFailed(JobLogEvent.CLEANUP_FAIL, exc.message) from exc
        self._log(job_id, JobLogEvent.CLEANUP_END, sourceServerID=server_id, targetInstanceID=instance_id)
        with self.store.transaction() as conn:
            server = repo.load_server(conn, server_id, for_update=True)
            server.pop("launchedInstance", None)
            repo.save_server(conn, server)
        self._set_launch_status(job_id, server_id, LaunchStatus.TERMINATED)

    # -- bookkeeping ------------------------------------------------------------------------------------

    def _own_job(self, conn: Any, job_id: str) -> dict[str, Any]:
        """The job, if this runner still owns it; else JobTakenOver (the caller's transaction rolls back)."""
        doc = repo.load_job(conn, job_id)
        if repo.job_owner(conn, job_id) != self.owner:
            raise JobTakenOver(job_id)
        return doc

    def _set_launch_status(self, job_id: str, server_id: str, status: LaunchStatus) -> None:
        with self.store.transaction() as conn:
            doc = self._own_job(conn, job_id)
            for p in doc["participatingServers"]:
                if p["sourceServerID"] == server_id:
                    p["launchStatus"] = status.value
            repo.save_job(conn, doc)

    def _log(self, job_id: str, event: JobLogEvent, **event_data: Any) -> None:
        item: dict[str, Any] = {"logDateTime": ids.iso(ids.utcnow()), "event": event.value}
        data = {k: v for k, v in event_data.items() if v is not None}
        if data:
            item["eventData"] = data
        with self.store.transaction() as conn:
            if repo.job_owner(conn, job_id) != self.owner:
                raise JobTakenOver(job_id)
            repo.add_log_item(conn, job_id, item)
