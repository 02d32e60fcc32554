"""The server actions of MGN's console menus: which operation each runs, when it applies, what it does.

One table drives the menus, the confirmation dialogs and the handler, so a button, its dialog and the
API call cannot disagree. `states` only decides which menu items are enabled; the API decides what is
allowed, and its refusal is what the user sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rehost.console.core import Ctx, Refused


@dataclass(frozen=True)
class Action:
    key: str
    label: str
    operation: str           # the MGN operation, authorized as mgn:<operation>
    menu: str                # "test" (Test and cutover) or "actions" (Actions)
    group: str               # the menu's section heading
    confirm: str             # what will happen, shown in the confirmation dialog
    states: tuple[str, ...]  # lifecycle states in which MGN's console enables it
    batch: bool = False      # one call for all selected servers (StartTest, StartCutover, TerminateTargetInstances)
    lifecycle: str | None = None  # ChangeServerLifeCycleState's target state
    archived: bool = False   # applies to archived servers too
    danger: bool = False


CONNECTED = ("NOT_READY", "READY_FOR_TEST", "TESTING", "READY_FOR_CUTOVER", "CUTTING_OVER", "CUTOVER")

ACTIONS: tuple[Action, ...] = (
    Action("launch_test", "Launch test instances", "StartTest", "test", "Testing",
           "A launch job takes a snapshot of each server's latest replicated data, converts it to boot on the target "
           "and launches a test instance from it (a previous test instance is terminated first). The lifecycle becomes "
           "“Test in progress”. Replication continues.",
           ("READY_FOR_TEST", "TESTING", "READY_FOR_CUTOVER"), batch=True),
    Action("mark_ready_for_cutover", "Mark as ready for cutover", "ChangeServerLifeCycleState", "test", "Testing",
           "Testing ends: the lifecycle becomes “Ready for cutover” and the test instance is terminated.",
           ("TESTING",), lifecycle="READY_FOR_CUTOVER"),
    Action("revert_to_ready_for_test", "Revert to ready for testing", "ChangeServerLifeCycleState", "test", "Testing",
           "The lifecycle returns to “Ready for testing”. Launched instances are kept.",
           ("TESTING", "READY_FOR_CUTOVER"), lifecycle="READY_FOR_TEST"),
    Action("launch_cutover", "Launch cutover instances", "StartCutover", "test", "Cutover",
           "A launch job takes a snapshot of each server's latest replicated data, converts it and launches the cutover "
           "instance that becomes production. The lifecycle becomes “Cutover in progress”. Replication continues until "
           "you finalize the cutover.",
           ("READY_FOR_CUTOVER", "CUTTING_OVER"), batch=True),
    Action("revert_to_ready_for_cutover", "Revert to ready for cutover", "ChangeServerLifeCycleState", "test", "Cutover",
           "The lifecycle returns to “Ready for cutover”. The cutover instance is kept.",
           ("CUTTING_OVER",), lifecycle="READY_FOR_CUTOVER"),
    Action("finalize_cutover", "Finalize cutover", "FinalizeCutover", "test", "Cutover",
           "The migration completes: data replication stops and reads “Disconnected”, the staging volumes are released "
           "and the agent uninstalls itself. The cutover instance keeps running. This cannot be undone.",
           ("CUTTING_OVER",), danger=True),
    Action("terminate", "Terminate launched instances", "TerminateTargetInstances", "test", "Other",
           "A terminate job stops and deletes the test or cutover instances launched for these servers; their disks are "
           "lost. The source servers and their replication are not affected.",
           ("NOT_READY", "READY_FOR_TEST", "READY_FOR_CUTOVER", "DISCONNECTED"), batch=True, danger=True),
    Action("mark_archived", "Mark as archived", "MarkAsArchived", "actions", "Server",
           "The servers are hidden from the default list and can no longer be changed. Launched instances are kept.",
           ("CUTOVER", "DISCONNECTED")),
    Action("disconnect", "Disconnect from service", "DisconnectFromService", "actions", "Server",
           "Data replication stops, the staging volumes are released and the agent uninstalls itself. Launched "
           "instances are kept. The lifecycle becomes “Disconnected”.",
           CONNECTED, danger=True),
    Action("delete", "Delete server", "DeleteSourceServer", "actions", "Server",
           "The servers' records and settings are removed from the service. This cannot be undone.",
           ("DISCONNECTED",), archived=True, danger=True),
)
BY_KEY = {a.key: a for a in ACTIONS}


def visible(ctx: Ctx, server_id: str = "*") -> list[Action]:
    """The actions the signed-in user may perform at all (a read-only user sees none)."""
    return [a for a in ACTIONS if ctx.can(f"mgn:{a.operation}", ctx.server_arn(server_id))]


def run(ctx: Ctx, action: Action, server_ids: list[str]) -> tuple[list[str], list[str], str | None]:
    """Run ``action`` on the servers: (servers done, error messages, job ID of a launch/terminate job).

    Raises `Refused` when nothing was selected or a batch operation is refused as a whole.
    """
    if not server_ids:
        raise Refused("ValidationException", "Select at least one source server.")
    if action.batch:
        result = ctx.call(action.operation, sourceServerIDs=server_ids)
        return server_ids, [], result["job"]["jobID"]
    done: list[str] = []
    failed: list[str] = []
    for sid in server_ids:
        params: dict[str, Any] = {"sourceServerID": sid}
        if action.lifecycle:
            params["lifeCycle"] = {"state": action.lifecycle}
        try:
            ctx.call(action.operation, **params)
            done.append(sid)
        except Refused as exc:
            failed.append(exc.message)
    return done, failed, None
