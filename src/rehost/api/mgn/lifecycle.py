"""Lifecycle and launches: StartTest, StartCutover, TerminateTargetInstances, ChangeServerLifeCycleState,
FinalizeCutover, DisconnectFromService.

The lifecycle's moves are `rehost.domain.lifecycle`'s one transition table; a launch is a job the job
runner executes once this transaction has committed (``hooks.submit_job``).
"""

from __future__ import annotations

from typing import Any

from rehost import ids
from rehost.api.mgn.base import MgnBase
from rehost.db import repo
from rehost.domain.jobs import InitiatedBy, JobStatus, JobType, LaunchStatus
from rehost.domain.lifecycle import LifeCycleState, Trigger, change_trigger, transition
from rehost.domain.replication import DataReplicationState as DRS
from rehost.errors import Conflict, QuotaExceeded


class LifecycleOps(MgnBase):
    """Mixin of `MgnService`: lifecycle changes and launch jobs, named after their operations."""

    def change_server_life_cycle_state(self, sourceServerID: str, lifeCycle: dict[str, Any]) -> dict[str, Any]:
        requested = lifeCycle["state"]
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, sourceServerID, for_update=True)
            self._require_not_archived(doc)
            if not doc.get("dataReplicationInfo", {}).get("lagDuration") and not doc.get("_launchable"):
                raise Conflict(f"Source server {sourceServerID} is not launchable yet: its initial sync is not complete.",
                               resource_id=sourceServerID, resource_type="SOURCE_SERVER")
            current = doc["lifeCycle"]["state"]
            trigger = change_trigger(current, requested)
            new_state = transition(current, trigger, resource_id=sourceServerID)
            cutover_launched = bool((doc["lifeCycle"].get("lastCutover") or {}).get("initiated"))
            if current == LifeCycleState.DISCONNECTED.value and not cutover_launched:
                raise Conflict(f"Source server {sourceServerID} was disconnected without a cutover launch; it cannot "
                               "be marked as cut over.", resource_id=sourceServerID, resource_type="SOURCE_SERVER")
            if self._active_job_ids(conn, [sourceServerID]):
                raise Conflict(f"Source server {sourceServerID} has a job in progress.", resource_id=sourceServerID,
                               resource_type="SOURCE_SERVER")
            now = ids.iso(ids.utcnow())
            if trigger is Trigger.REVERT_TO_READY_FOR_TEST and current == LifeCycleState.TESTING.value:
                doc["lifeCycle"].setdefault("lastTest", {})["reverted"] = {"apiCallDateTime": now}
            if trigger is Trigger.MARK_READY_FOR_CUTOVER:
                doc["lifeCycle"].setdefault("lastTest", {})["finalized"] = {"apiCallDateTime": now}
            if trigger is Trigger.REVERT_TO_READY_FOR_CUTOVER:
                doc["lifeCycle"].setdefault("lastCutover", {})["reverted"] = {"apiCallDateTime": now}
            if trigger is Trigger.CHANGE_TO_CUTOVER:
                doc["lifeCycle"].setdefault("lastCutover", {})["finalized"] = {"apiCallDateTime": now}
            doc["lifeCycle"]["state"] = new_state.value
            repo.save_server(conn, doc)
            result = self.public_server(conn, doc)
        if trigger is Trigger.MARK_READY_FOR_CUTOVER:
            # MGN recommends terminating the test instance once testing is done; rehost does it.
            self._terminate_after_test(sourceServerID)
        return result

    def _terminate_after_test(self, server_id: str) -> None:
        with self.store.read() as conn:
            launched = repo.load_server(conn, server_id).get("launchedInstance")
        if launched and launched.get("ec2InstanceID"):
            self._create_job(JobType.TERMINATE, InitiatedBy.TERMINATE, [server_id], {}, check_state=None)

    def start_test(self, sourceServerIDs: list[str], tags: dict[str, str] | None = None) -> dict[str, Any]:
        return {"job": self._create_job(JobType.LAUNCH, InitiatedBy.START_TEST, sourceServerIDs, tags or {},
                                        check_state=Trigger.START_TEST)}

    def start_cutover(self, sourceServerIDs: list[str], tags: dict[str, str] | None = None) -> dict[str, Any]:
        return {"job": self._create_job(JobType.LAUNCH, InitiatedBy.START_CUTOVER, sourceServerIDs, tags or {},
                                        check_state=Trigger.START_CUTOVER)}

    def terminate_target_instances(self, sourceServerIDs: list[str], tags: dict[str, str] | None = None) -> dict[str, Any]:
        return {"job": self._create_job(JobType.TERMINATE, InitiatedBy.TERMINATE, sourceServerIDs, tags or {},
                                        check_state=None)}

    def _create_job(self, job_type: JobType, initiated_by: InitiatedBy, server_ids: list[str], tags: dict[str, str],
                    *, check_state: Trigger | None) -> dict[str, Any]:
        server_ids = list(dict.fromkeys(server_ids))
        quotas = self.settings.quotas
        if len(server_ids) > quotas.servers_per_job:
            raise QuotaExceeded(f"A job can include at most {quotas.servers_per_job} source servers.",
                                quota_code="servers_per_job", quota_value=quotas.servers_per_job)
        now = ids.utcnow()
        job_id = ids.new_id("mgnjob")
        with self.store.transaction() as conn:
            running = repo.query_jobs(conn, statuses=[JobStatus.PENDING.value, JobStatus.STARTED.value])
            if len(running) >= quotas.concurrent_jobs:
                raise QuotaExceeded(f"At most {quotas.concurrent_jobs} jobs can be in progress at once.",
                                    quota_code="concurrent_jobs", quota_value=quotas.concurrent_jobs)
            busy = self._active_job_ids(conn, server_ids)
            if busy:
                raise QuotaExceeded(
                    f"Source server {busy[0]} already has a job in progress; a source server can be in one job at a time.",
                    quota_code="jobs_per_server", quota_value=quotas.jobs_per_server)
            docs = [repo.load_server(conn, sid, for_update=True) for sid in server_ids]
            for doc in docs:
                self._require_not_archived(doc)
                sid = doc["sourceServerID"]
                if check_state is not None:
                    new_state = transition(doc["lifeCycle"]["state"], check_state, resource_id=sid)
                    if not doc.get("_launchable"):
                        raise Conflict(f"Source server {sid} has no launchable snapshot yet.", resource_id=sid,
                                       resource_type="SOURCE_SERVER")
                    doc["lifeCycle"]["state"] = new_state.value
                    key = "lastTest" if initiated_by is InitiatedBy.START_TEST else "lastCutover"
                    doc["lifeCycle"][key] = {"initiated": {"apiCallDateTime": ids.iso(now), "jobID": job_id}}
                elif doc["lifeCycle"]["state"] in ("TESTING", "CUTTING_OVER", "CUTOVER"):
                    raise Conflict(
                        f"Source server {sid} is in lifecycle state {doc['lifeCycle']['state']}: its launched instance "
                        "cannot be terminated now.", resource_id=sid, resource_type="SOURCE_SERVER")
                elif not (doc.get("launchedInstance") or {}).get("ec2InstanceID"):
                    raise Conflict(f"Source server {sid} has no launched instance to terminate.", resource_id=sid,
                                   resource_type="SOURCE_SERVER")
                repo.save_server(conn, doc)
            job: dict[str, Any] = {
                "jobID": job_id, "arn": self.account.arn(f"job/{job_id}"), "type": job_type.value,
                "initiatedBy": initiated_by.value, "creationDateTime": ids.iso(now), "status": JobStatus.PENDING.value,
                "participatingServers": [{"sourceServerID": sid, "launchStatus": LaunchStatus.PENDING.value} for sid in server_ids],
            }
            repo.insert_job(conn, job, self.store.next_seq(conn, "job"), now)
            repo.put_tags(conn, job["arn"], tags)
            result = dict(job, tags=dict(tags))
        self.hooks.submit_job(job_id)
        return result

    def finalize_cutover(self, sourceServerID: str) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, sourceServerID, for_update=True)
            self._require_not_archived(doc)
            new_state = transition(doc["lifeCycle"]["state"], Trigger.FINALIZE_CUTOVER, resource_id=sourceServerID)
            if self._active_job_ids(conn, [sourceServerID]):
                raise Conflict(f"The cutover job of source server {sourceServerID} is still running.",
                               resource_id=sourceServerID, resource_type="SOURCE_SERVER")
            launched = doc.get("launchedInstance") or {}
            job_id = (doc["lifeCycle"].get("lastCutover") or {}).get("initiated", {}).get("jobID")
            if not launched.get("ec2InstanceID") or launched.get("jobID") != job_id:
                raise Conflict(f"Source server {sourceServerID} has no launched cutover instance to finalize.",
                               resource_id=sourceServerID, resource_type="SOURCE_SERVER")
            doc["lifeCycle"]["state"] = new_state.value
            doc["lifeCycle"]["lastCutover"]["finalized"] = {"apiCallDateTime": ids.iso(ids.utcnow())}
            self._disconnect_replication(doc)
            repo.save_server(conn, doc)
            result = self.public_server(conn, doc)
        self._after_disconnect(sourceServerID)
        return result

    def disconnect_from_service(self, sourceServerID: str) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, sourceServerID, for_update=True)
            self._require_not_archived(doc)
            if self._active_job_ids(conn, [sourceServerID]):
                raise Conflict(f"Source server {sourceServerID} has a job in progress.", resource_id=sourceServerID,
                               resource_type="SOURCE_SERVER")
            doc["lifeCycle"]["state"] = transition(doc["lifeCycle"]["state"], Trigger.DISCONNECT, resource_id=sourceServerID).value
            self._disconnect_replication(doc)
            repo.save_server(conn, doc)
            result = self.public_server(conn, doc)
        self._after_disconnect(sourceServerID)
        return result

    def _disconnect_replication(self, doc: dict[str, Any]) -> None:
        info = doc.setdefault("dataReplicationInfo", {})
        info["dataReplicationState"] = DRS.DISCONNECTED.value
        for key in ("lagDuration", "etaDateTime", "dataReplicationError", "dataReplicationInitiation", "replicatorId"):
            info.pop(key, None)
        info["replicatedDisks"] = []

    def _after_disconnect(self, server_id: str) -> None:
        self.hooks.agent_command(server_id, "DISCONNECT")
        self.hooks.release_replication(server_id)
