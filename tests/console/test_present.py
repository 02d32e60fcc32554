"""The console's wording of MGN records: lifecycle labels, replication progress, ETA, lag, alerts, timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rehost import ids
from rehost.console import present
from rehost.console.actions import ACTIONS
from rehost.console.pages_servers import install_command

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def server(state: str = "NOT_READY", **info: object) -> dict[str, object]:
    return {"sourceServerID": "s-0123456789abcdef0", "lifeCycle": {"state": state},
            "sourceProperties": {"identificationHints": {"hostname": "web-1"}}, "dataReplicationInfo": info}


def test_lifecycle_labels_are_mgn_console_words() -> None:
    words = [present.lifecycle_label(s) for s in ("NOT_READY", "READY_FOR_TEST", "TESTING", "READY_FOR_CUTOVER",
                                                  "CUTTING_OVER", "CUTOVER", "DISCONNECTED")]
    assert words == ["Not ready", "Ready for testing", "Test in progress", "Ready for cutover", "Cutover in progress",
                     "Cutover complete", "Disconnected"]


def test_durations_parse_what_the_control_plane_writes() -> None:
    for seconds in (0, 7, 75, 3600 + 62, 2 * 86400 + 5):
        assert present.duration_seconds(ids.iso_duration(seconds)) == seconds
    assert present.duration_seconds("nonsense") is None
    assert present.human_duration(3725) == "1h 2m"


def test_initial_sync_shows_progress_and_eta() -> None:
    eta = ids.iso(NOW + timedelta(minutes=4, seconds=10))
    row = present.server_row(server("NOT_READY", dataReplicationState="INITIAL_SYNC", etaDateTime=eta, replicatedDisks=[
        {"deviceName": "/dev/sda", "totalStorageBytes": 4 * 2**30, "replicatedStorageBytes": 2**30},
        {"deviceName": "/dev/sdb", "totalStorageBytes": 4 * 2**30, "replicatedStorageBytes": 2**30}]), NOW)
    rep = row["replication"]
    assert rep["label"] == "Initial sync" and rep["percent"] == 25 and rep["eta"] == "4m 10s"
    assert [d["percent"] for d in rep["disks"]] == [25, 25]
    assert row["next_step"] == "Wait for initial sync to complete"


def test_healthy_replication_has_lag_and_no_progress_bar() -> None:
    row = present.server_row(server("READY_FOR_TEST", dataReplicationState="CONTINUOUS", lagDuration="PT3S",
                                    replicatedDisks=[{"deviceName": "/dev/sda", "totalStorageBytes": 10,
                                                      "replicatedStorageBytes": 10}]), NOW)
    assert row["replication"]["label"] == "Healthy" and row["replication"]["percent"] is None
    assert row["replication"]["lag"] == "3s" and row["alerts"] == []
    assert row["next_step"] == "Launch test instance"


def test_alerts_for_stalled_and_lagging_servers() -> None:
    stalled = present.alerts(server("NOT_READY", dataReplicationState="STALLED"))
    assert [a["label"] for a in stalled] == ["Stalled"]
    lagging = present.alerts(server("READY_FOR_TEST", dataReplicationState="CONTINUOUS", lagDuration="PT12M"))
    assert [a["label"] for a in lagging] == ["Lagging"]
    errored = present.alerts(server("NOT_READY", dataReplicationState="INITIATING",
                                    dataReplicationError={"error": "FAILED_TO_PAIR_REPLICATION_SERVER_WITH_AGENT"}))
    assert errored[0]["tone"] == "error" and errored[0]["label"].startswith("Failed to pair")


def test_timeline_marks_the_current_stage_and_what_a_disconnected_server_went_through() -> None:
    stages = present.timeline(server("TESTING"))
    assert [s["status"] for s in stages] == ["done", "done", "current", "todo", "todo", "todo"]
    doc = server("DISCONNECTED")
    doc["lifeCycle"] = {"state": "DISCONNECTED", "addedToServiceDateTime": ids.iso(NOW),
                        "lastTest": {"initiated": {"apiCallDateTime": ids.iso(NOW)}}}
    stages = present.timeline(doc)
    assert [s["status"] for s in stages] == ["done", "done", "done", "todo", "todo", "todo", "current"]
    assert stages[-1]["label"] == "Disconnected"


def test_every_action_says_what_will_happen_and_names_a_real_operation() -> None:
    from rehost.api.core.model import service_model
    from rehost.api.mgn.service import MgnService
    from rehost.console.core import snake

    operations = set(service_model("mgn").operation_names)
    for action in ACTIONS:
        assert len(action.confirm) > 40, action.key
        assert action.operation in operations, action.operation
        assert hasattr(MgnService, snake(action.operation)), action.operation
    assert {a.label for a in ACTIONS} >= {"Launch test instances", "Mark as ready for cutover",
                                           "Revert to ready for testing", "Launch cutover instances",
                                           "Revert to ready for cutover", "Finalize cutover", "Mark as archived",
                                           "Disconnect from service", "Terminate launched instances", "Delete server"}


def test_install_command_quotes_what_a_shell_would_split() -> None:
    cmd = install_command("http://10.0.0.5:8080", "us-east-1", "AKIAEXAMPLE", "se cret'$")
    assert "--aws-secret-access-key 'se cret'\"'\"'$'" in cmd
    assert cmd.splitlines()[0] == ("wget -O ./rehost-replication-installer-init "
                                   "http://10.0.0.5:8080/installer/linux/rehost-replication-installer-init")
