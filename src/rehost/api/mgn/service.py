"""The MGN operations. Methods are named after the operations and take the model's member names.

Each method runs in one database transaction and returns an MGN-shaped dict; the API edge serializes it.
Side effects outside the database (launching jobs, commands to agents, replication servers) go through
the `Hooks` the control plane gives the service, after the transaction has committed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import Connection

from rehost import ids
from rehost.api.mgn import templates as tpl
from rehost.api.mgn.applications import ApplicationOps
from rehost.api.mgn.grouping import APPLICATION, WAVE
from rehost.api.mgn.waves import WaveOps
from rehost.config import Settings
from rehost.db import repo
from rehost.db.store import Store
from rehost.domain.jobs import InitiatedBy, JobStatus, JobType, LaunchStatus
from rehost.domain.lifecycle import LifeCycleState, Trigger, change_trigger, transition
from rehost.domain.replication import DataReplicationState as DRS
from rehost.errors import Conflict, InvalidInput, NotFound, QuotaExceeded


@dataclass
class Hooks:
    """What the service asks of the rest of the control plane once its transaction has committed."""

    submit_job: Callable[[str], None] = lambda job_id: None
    agent_command: Callable[[str, str], None] = lambda server_id, command: None
    release_replication: Callable[[str], None] = lambda server_id: None
    server_deleted: Callable[[str], object] = lambda server_id: None
    replication_changed: Callable[[dict[str, Any]], None] = lambda server_doc: None
    create_ec2_launch_template: Callable[[Connection, str, str], str] | None = None


@dataclass
class Account:
    account_id: str
    region: str

    def arn(self, resource: str) -> str:
        return f"arn:aws:mgn:{self.region}:{self.account_id}:{resource}"


@dataclass
class MgnService(ApplicationOps, WaveOps):
    """MGN's operations; applications and waves are composed in from their own modules."""

    store: Store
    settings: Settings
    account: Account
    hooks: Hooks = field(default_factory=Hooks)

    # -- service --------------------------------------------------------------------------------------

    def is_initialized(self) -> bool:
        return self.store.get_meta("initialized") == "1"

    def initialize_service(self) -> dict[str, Any]:
        with self.store.transaction() as conn:
            if not repo.list_templates(conn, "replication"):
                self._create_template(conn, "replication", "rct", "replication-configuration-template",
                                      copy.deepcopy(tpl.DEFAULT_REPLICATION_TEMPLATE), {})
            if not repo.list_templates(conn, "launch"):
                self._create_launch_template(conn, copy.deepcopy(tpl.DEFAULT_LAUNCH_TEMPLATE), {})
            self.store.set_meta(conn, "initialized", "1")
        return {}

    # -- templates ------------------------------------------------------------------------------------

    def _create_template(self, conn: Connection, kind: str, prefix: str, arn_type: str, doc: dict[str, Any],
                         tags: dict[str, str]) -> dict[str, Any]:
        template_id = ids.new_id(prefix)
        id_key = "replicationConfigurationTemplateID" if kind == "replication" else "launchConfigurationTemplateID"
        doc[id_key] = template_id
        doc["arn"] = self.account.arn(f"{arn_type}/{template_id}")
        repo.save_template(conn, kind, template_id, doc, seq=self.store.next_seq(conn, f"template:{kind}"))
        repo.put_tags(conn, doc["arn"], tags)
        return self._with_tags(conn, doc)

    def _create_launch_template(self, conn: Connection, doc: dict[str, Any], tags: dict[str, str]) -> dict[str, Any]:
        doc["ec2LaunchTemplateID"] = ids.new_id("lt")
        return self._create_template(conn, "launch", "lct", "launch-configuration-template", doc, tags)

    def _with_tags(self, conn: Connection, doc: dict[str, Any]) -> dict[str, Any]:
        doc = dict(doc)
        doc["tags"] = repo.get_tags(conn, doc["arn"])
        return doc

    def create_replication_configuration_template(self, **params: Any) -> dict[str, Any]:
        tags = params.pop("tags", None) or {}
        doc = tpl.pick(params, tpl.REPLICATION_FIELDS)
        with self.store.transaction() as conn:
            return self._create_template(conn, "replication", "rct", "replication-configuration-template", doc, tags)

    def describe_replication_configuration_templates(self, replicationConfigurationTemplateIDs: list[str] | None = None,
                                                     maxResults: int | None = None, nextToken: str | None = None) -> dict[str, Any]:
        return self._describe_templates("replication", replicationConfigurationTemplateIDs, maxResults, nextToken)

    def _describe_templates(self, kind: str, template_ids: list[str] | None, max_results: int | None,
                            token: str | None) -> dict[str, Any]:
        limit = max_results or 1000
        with self.store.read() as conn:
            rows = repo.list_templates(conn, kind, ids=template_ids, after_seq=repo.decode_token(token), limit=limit + 1)
            items = [self._with_tags(conn, doc) for _, doc in rows[:limit]]
        return _page(items, rows, limit)

    def update_replication_configuration_template(self, replicationConfigurationTemplateID: str, **params: Any) -> dict[str, Any]:
        return self._update_template("replication", replicationConfigurationTemplateID, params, tpl.REPLICATION_FIELDS)

    def delete_replication_configuration_template(self, replicationConfigurationTemplateID: str) -> dict[str, Any]:
        return self._delete_template("replication", replicationConfigurationTemplateID)

    def _update_template(self, kind: str, template_id: str, params: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_template(conn, kind, template_id)
            doc.update(tpl.pick(params, fields))
            repo.save_template(conn, kind, template_id, doc)
            return self._with_tags(conn, doc)

    def _delete_template(self, kind: str, template_id: str) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_template(conn, kind, template_id)
            repo.delete_template(conn, template_id)
            repo.remove_tags(conn, doc["arn"])
        return {}

    def create_launch_configuration_template(self, **params: Any) -> dict[str, Any]:
        tags = params.pop("tags", None) or {}
        doc = {**copy.deepcopy(tpl.DEFAULT_LAUNCH_TEMPLATE), **tpl.pick(params, tpl.LAUNCH_TEMPLATE_FIELDS)}
        with self.store.transaction() as conn:
            return self._create_launch_template(conn, doc, tags)

    def describe_launch_configuration_templates(self, launchConfigurationTemplateIDs: list[str] | None = None,
                                                maxResults: int | None = None, nextToken: str | None = None) -> dict[str, Any]:
        return self._describe_templates("launch", launchConfigurationTemplateIDs, maxResults, nextToken)

    def update_launch_configuration_template(self, launchConfigurationTemplateID: str, **params: Any) -> dict[str, Any]:
        return self._update_template("launch", launchConfigurationTemplateID, params, tpl.LAUNCH_TEMPLATE_FIELDS)

    def delete_launch_configuration_template(self, launchConfigurationTemplateID: str) -> dict[str, Any]:
        return self._delete_template("launch", launchConfigurationTemplateID)

    # -- source servers -------------------------------------------------------------------------------

    def public_server(self, conn: Connection, doc: dict[str, Any]) -> dict[str, Any]:
        out = dict(doc)
        out["tags"] = repo.get_tags(conn, doc["arn"])
        return out

    def describe_source_servers(self, filters: dict[str, Any] | None = None, maxResults: int | None = None,
                                nextToken: str | None = None) -> dict[str, Any]:
        filters = filters or {}
        limit = maxResults or 1000
        with self.store.read() as conn:
            server_ids = filters.get("sourceServerIDs")
            if filters.get("applicationIDs"):
                in_apps = self._server_ids_in_applications(conn, filters["applicationIDs"])
                server_ids = [sid for sid in in_apps if not server_ids or sid in server_ids]
                if not server_ids:
                    return {"items": []}
            rows = repo.query_servers(
                conn, ids=server_ids, is_archived=filters.get("isArchived"),
                lifecycle_states=filters.get("lifeCycleStates"), replication_types=filters.get("replicationTypes"),
                after_seq=repo.decode_token(nextToken), limit=limit + 1,
            )
            items = [self.public_server(conn, doc) for _, doc in rows[:limit]]
        return _page(items, rows, limit)

    def get_server(self, server_id: str) -> dict[str, Any]:
        with self.store.read() as conn:
            return self.public_server(conn, repo.load_server(conn, server_id))

    def update_source_server(self, sourceServerID: str, **params: Any) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, sourceServerID, for_update=True)
            for key in ("connectorAction", "userProvidedID", "fqdnForActionFramework"):
                if params.get(key) is not None:
                    if key == "userProvidedID" and doc.get("userProvidedID") and doc["userProvidedID"] != params[key]:
                        raise Conflict("userProvidedID cannot be changed once set.", resource_id=sourceServerID,
                                       resource_type="SOURCE_SERVER")
                    doc[key] = params[key]
            if params.get("platform"):
                doc["_platform"] = params["platform"]
            repo.save_server(conn, doc)
            return self.public_server(conn, doc)

    def delete_source_server(self, sourceServerID: str) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, sourceServerID, for_update=True)
            state = doc["lifeCycle"]["state"]
            if state != LifeCycleState.DISCONNECTED.value and not doc.get("isArchived"):
                raise Conflict(
                    f"Source server {sourceServerID} must be disconnected from service or archived before it is deleted "
                    f"(lifecycle state {state}).", resource_id=sourceServerID, resource_type="SOURCE_SERVER")
            if self._active_job_ids(conn, [sourceServerID]):
                raise Conflict(f"Source server {sourceServerID} has a job in progress.", resource_id=sourceServerID,
                               resource_type="SOURCE_SERVER")
            repo.delete_server(conn, sourceServerID)
            repo.remove_tags(conn, doc["arn"])
        self.hooks.server_deleted(sourceServerID)
        return {}

    def mark_as_archived(self, sourceServerID: str) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, sourceServerID, for_update=True)
            if doc["lifeCycle"]["state"] not in (LifeCycleState.CUTOVER.value, LifeCycleState.DISCONNECTED.value):
                raise Conflict(
                    f"Source server {sourceServerID} can be archived only after cutover or disconnection "
                    f"(lifecycle state {doc['lifeCycle']['state']}).", resource_id=sourceServerID, resource_type="SOURCE_SERVER")
            doc["isArchived"] = True
            repo.save_server(conn, doc)
            return self.public_server(conn, doc)

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

    # -- launches -------------------------------------------------------------------------------------

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

    def _active_job_ids(self, conn: Connection, server_ids: list[str]) -> list[str]:
        busy: list[str] = []
        wanted = set(server_ids)
        for _, job in repo.query_jobs(conn, statuses=[JobStatus.PENDING.value, JobStatus.STARTED.value]):
            for p in job["participatingServers"]:
                if p["sourceServerID"] in wanted:
                    busy.append(p["sourceServerID"])
        return busy

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

    @staticmethod
    def _require_not_archived(doc: dict[str, Any]) -> None:
        if doc.get("isArchived"):
            raise Conflict(f"Source server {doc['sourceServerID']} is archived.", resource_id=doc["sourceServerID"],
                           resource_type="SOURCE_SERVER")

    # -- replication control --------------------------------------------------------------------------

    _REPLICATION_MOVES: ClassVar[dict[str, tuple[tuple[str, ...], str | None, str]]] = {
        # operation: (states it is refused in, state it sets (None: keep), agent command)
        "start": (("INITIATING", "INITIAL_SYNC", "BACKLOG", "CREATING_SNAPSHOT", "CONTINUOUS", "RESCAN", "PAUSED",
                   "STALLED", "DISCONNECTED"), DRS.INITIATING.value, "START"),
        "stop": (("STOPPED", "DISCONNECTED"), DRS.STOPPED.value, "STOP"),
        "pause": (("PAUSED", "STOPPED", "DISCONNECTED"), DRS.PAUSED.value, "PAUSE"),
        "resume": (("INITIATING", "INITIAL_SYNC", "BACKLOG", "CREATING_SNAPSHOT", "CONTINUOUS", "RESCAN", "STALLED",
                    "STOPPED", "DISCONNECTED"), None, "RESUME"),
        "retry": (("INITIATING", "INITIAL_SYNC", "BACKLOG", "CREATING_SNAPSHOT", "CONTINUOUS", "RESCAN", "PAUSED",
                   "STOPPED", "DISCONNECTED"), DRS.INITIATING.value, "START"),
    }

    def _replication_move(self, server_id: str, move: str) -> dict[str, Any]:
        refused, new_state, command = self._REPLICATION_MOVES[move]
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, server_id, for_update=True)
            self._require_not_archived(doc)
            info = doc.setdefault("dataReplicationInfo", {})
            current = info.get("dataReplicationState", DRS.STOPPED.value)
            if current in refused and move == "retry":
                # RetryDataReplication declares no ConflictException in MGN's model: a refusal is a ValidationException.
                raise InvalidInput(f"Cannot retry data replication of source server {server_id}: it is {current}, "
                                   "not stalled.")
            if current in refused:
                raise Conflict(f"Cannot {move} replication of source server {server_id}: data replication is {current}.",
                               resource_id=server_id, resource_type="SOURCE_SERVER")
            if move == "resume":
                new_state = doc.get("_stateBeforePause") or DRS.INITIATING.value
            if move == "pause":
                doc["_stateBeforePause"] = current
            info["dataReplicationState"] = new_state
            if move in ("start", "retry"):
                info.pop("dataReplicationError", None)
                doc["_replicationWanted"] = True
            if move == "stop":
                doc["_replicationWanted"] = False
            repo.save_server(conn, doc)
            result = self.public_server(conn, doc)
        self.hooks.agent_command(server_id, command)
        return result

    def start_replication(self, sourceServerID: str) -> dict[str, Any]:
        return self._replication_move(sourceServerID, "start")

    def stop_replication(self, sourceServerID: str) -> dict[str, Any]:
        return self._replication_move(sourceServerID, "stop")

    def pause_replication(self, sourceServerID: str) -> dict[str, Any]:
        return self._replication_move(sourceServerID, "pause")

    def resume_replication(self, sourceServerID: str) -> dict[str, Any]:
        return self._replication_move(sourceServerID, "resume")

    def retry_data_replication(self, sourceServerID: str) -> dict[str, Any]:
        return self._replication_move(sourceServerID, "retry")

    # -- per-server configuration ---------------------------------------------------------------------

    def get_replication_configuration(self, sourceServerID: str) -> dict[str, Any]:
        with self.store.read() as conn:
            return dict(repo.load_server(conn, sourceServerID)["_replicationConfiguration"])

    def update_replication_configuration(self, sourceServerID: str, **params: Any) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, sourceServerID, for_update=True)
            self._require_not_archived(doc)
            config = doc["_replicationConfiguration"]
            known = {d["deviceName"] for d in config.get("replicatedDisks", [])}
            for disk in params.get("replicatedDisks") or []:
                if disk.get("deviceName") not in known:  # the model leaves deviceName optional
                    raise InvalidInput(f"Source server {sourceServerID} has no disk {disk.get('deviceName')}.")
            config.update(tpl.pick(params, tpl.REPLICATION_FIELDS + ("name", "replicatedDisks")))
            repo.save_server(conn, doc)
        self.hooks.replication_changed(doc)
        return dict(config)

    def get_launch_configuration(self, sourceServerID: str) -> dict[str, Any]:
        with self.store.read() as conn:
            return dict(repo.load_server(conn, sourceServerID)["_launchConfiguration"])

    def update_launch_configuration(self, sourceServerID: str, **params: Any) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, sourceServerID, for_update=True)
            self._require_not_archived(doc)
            config = doc["_launchConfiguration"]
            config.update(tpl.pick(params, tpl.LAUNCH_CONFIGURATION_FIELDS))
            repo.save_server(conn, doc)
            return dict(config)

    def get_launch_configuration_defaults(self, sourceServerID: str) -> dict[str, Any]:
        with self.store.read() as conn:
            doc = repo.load_server(conn, sourceServerID)
            return {"sourceServerID": sourceServerID, **doc.get("_launchDefaults", {"smallVolumeMaxSize": 0})}

    def update_launch_configuration_defaults(self, sourceServerID: str, **params: Any) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, sourceServerID, for_update=True)
            defaults = doc.setdefault("_launchDefaults", {"smallVolumeMaxSize": 0})
            for key in ("smallVolumeMaxSize", "smallVolumeConfiguration", "largeVolumeConfiguration"):
                if key in params and params[key] is not None:
                    defaults[key] = copy.deepcopy(params[key])  # a sent sub-object replaces the stored one whole
            repo.save_server(conn, doc)
            return {"sourceServerID": sourceServerID, **defaults}

    # -- jobs -----------------------------------------------------------------------------------------

    def describe_jobs(self, filters: dict[str, Any] | None = None, maxResults: int | None = None,
                      nextToken: str | None = None) -> dict[str, Any]:
        filters = filters or {}
        limit = maxResults or 1000
        from_date = _parse_date(filters.get("fromDate"), "filters.fromDate")
        to_date = _parse_date(filters.get("toDate"), "filters.toDate")
        with self.store.read() as conn:
            rows = repo.query_jobs(conn, ids=filters.get("jobIDs"), from_date=from_date, to_date=to_date,
                                   before_seq=repo.decode_token(nextToken), limit=limit + 1)
            items = [dict(doc, tags=repo.get_tags(conn, doc["arn"])) for _, doc in rows[:limit]]
        return _page(items, rows, limit)

    def describe_job_log_items(self, jobID: str, maxResults: int | None = None, nextToken: str | None = None) -> dict[str, Any]:
        limit = maxResults or 1000
        with self.store.read() as conn:
            repo.load_job(conn, jobID)
            rows = repo.log_items(conn, jobID, after_seq=repo.decode_token(nextToken), limit=limit + 1)
        return _page([doc for _, doc in rows[:limit]], rows, limit)

    def delete_job(self, jobID: str) -> dict[str, Any]:
        with self.store.transaction() as conn:
            job = repo.load_job(conn, jobID)
            if job["status"] != JobStatus.COMPLETED.value:
                raise Conflict(f"Job {jobID} is {job['status']}; only completed jobs can be deleted.",
                               resource_id=jobID, resource_type="JOB")
            repo.delete_job(conn, jobID)
            repo.remove_tags(conn, job["arn"])
        return {}

    # -- tags -----------------------------------------------------------------------------------------

    def _require_resource(self, conn: Connection, arn: str) -> None:
        prefix = self.account.arn("")
        if not arn.startswith(prefix) or "/" not in arn[len(prefix):]:
            raise NotFound(f"Resource {arn} not found.", resource_id=arn)
        rtype, rid = arn[len(prefix):].split("/", 1)
        loaders: dict[str, Callable[[], Any]] = {
            "source-server": lambda: repo.load_server(conn, rid),
            "job": lambda: repo.load_job(conn, rid),
            "replication-configuration-template": lambda: repo.load_template(conn, "replication", rid),
            "launch-configuration-template": lambda: repo.load_template(conn, "launch", rid),
            "application": lambda: self._load_group(conn, APPLICATION, rid),
            "wave": lambda: self._load_group(conn, WAVE, rid),
        }
        if rtype not in loaders:
            raise NotFound(f"Resource {arn} not found.", resource_id=arn)
        try:
            loaders[rtype]()
        except NotFound as exc:
            raise NotFound(f"Resource {arn} not found.", resource_id=arn) from exc

    def tag_resource(self, resourceArn: str, tags: dict[str, str]) -> dict[str, Any]:
        with self.store.transaction() as conn:
            self._require_resource(conn, resourceArn)
            merged = {**repo.get_tags(conn, resourceArn), **tags}
            if len(merged) > 50:
                raise InvalidInput("A resource can have at most 50 tags.")
            repo.put_tags(conn, resourceArn, tags)
        return {}

    def untag_resource(self, resourceArn: str, tagKeys: list[str]) -> dict[str, Any]:
        with self.store.transaction() as conn:
            self._require_resource(conn, resourceArn)
            repo.remove_tags(conn, resourceArn, tagKeys)
        return {}

    def list_tags_for_resource(self, resourceArn: str) -> dict[str, Any]:
        with self.store.read() as conn:
            self._require_resource(conn, resourceArn)
            return {"tags": repo.get_tags(conn, resourceArn)}


def _page(items: list[dict[str, Any]], rows: list[tuple[int, dict[str, Any]]], limit: int) -> dict[str, Any]:
    """A page of a listing fetched with ``limit + 1`` rows: the extra row only says there is a next page."""
    out: dict[str, Any] = {"items": items}
    if len(rows) > limit:
        out["nextToken"] = repo.encode_token(rows[limit - 1][0])
    return out


def _parse_date(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return ids.parse_iso(value)
    except ValueError as exc:
        raise InvalidInput(f"{name} is not a valid date: {value}") from exc
