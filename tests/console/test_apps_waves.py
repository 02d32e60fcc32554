"""The console's Applications and Waves pages over HTTP against a real server: create, associate, archive,
and the Test and cutover actions on a wave's servers, checked through the API; IAM decides what shows."""

from __future__ import annotations

import html
import re
import secrets
import time
from typing import Any

import pytest

from console import test_http
from console.conftest import ConsoleEnv
from console.httpclient import ConsoleClient, Response

APP_LOCATION = re.compile(r"^/console/applications/(app-[0-9a-zA-Z]{17})$")
WAVE_LOCATION = re.compile(r"^/console/waves/(wave-[0-9a-zA-Z]{17})$")
admin = test_http.admin  # the signed-in admin's client, a module fixture


@pytest.fixture(scope="module")
def mgn(console_env: ConsoleEnv) -> Any:
    return console_env.server.client(console_env.admin_key)


def _follow(client: ConsoleClient, resp: Response) -> Response:
    assert resp.status == 303, resp.body[:500]
    return client.get(resp.headers["location"])


def _create(client: ConsoleClient, path: str, name: str, pattern: re.Pattern[str]) -> str:
    resp = client.post(f"/console/{path}/create", {"csrf": client.csrf(), "name": name, "description": "made here"})
    assert resp.status == 303
    m = pattern.match(resp.headers["location"])
    assert m, resp.headers["location"]
    page = client.get(resp.headers["location"])
    assert page.status == 200 and html.escape(name) in page.body and "created" in page.body
    return m.group(1)


def _ready_server(console_env: ConsoleEnv, hostname: str) -> str:
    sid = str(console_env.agent.register(hostname)["sourceServerID"])
    console_env.agent.report_synced(sid)
    return sid


def _finish_jobs(console_env: ConsoleEnv, mgn: Any, sid: str, timeout: float = 60) -> None:
    """Play the agent: answer the launch job's snapshot requests with FAILED until no job of `sid` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        commands = console_env.agent.call("GetAgentCommandForMgn", {"sourceServerID": sid})["commands"]
        snaps = [c for c in commands if c["type"] in ("SNAPSHOT", "SYNC_SNAPSHOT")]
        if snaps:
            console_env.agent.call("UpdateAgentReplicationInfoForMgn", {
                "sourceServerID": sid, "initialSyncComplete": True,
                "commandResults": [{"commandID": c["commandID"], "status": "FAILED", "message": "no disks"}
                                   for c in snaps]})
        jobs = mgn.describe_jobs()["items"]
        if not any(j["status"] != "COMPLETED" and sid in [p["sourceServerID"] for p in j["participatingServers"]]
                   for j in jobs):
            return
        time.sleep(0.1)
    raise AssertionError(f"a job of {sid} did not complete within {timeout} s")


def _state(mgn: Any, sid: str) -> str:
    return str(mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]["lifeCycle"]["state"])


def test_application_create_associate_and_list(console_env: ConsoleEnv, admin: ConsoleClient, mgn: Any) -> None:
    listing = admin.get("/console/applications")
    assert listing.status == 200 and "Add application" in listing.body and 'href="/console/waves"' in listing.body
    name = f"billing-{secrets.token_hex(3)}"
    app_id = _create(admin, "applications", name, APP_LOCATION)
    assert name in admin.get("/console/applications").body

    # The API's own refusal (a duplicate name, case-insensitive) is what the page shows.
    page = _follow(admin, admin.post("/console/applications/create", {"csrf": admin.csrf(), "name": name.upper()}))
    assert "flash-error" in page.body and "already used" in page.body

    sid = _ready_server(console_env, f"web-{secrets.token_hex(3)}")
    detail = admin.get(f"/console/applications/{app_id}")
    assert f'value="{sid}"' in detail.body  # a candidate: in no application yet
    page = _follow(admin, admin.post(f"/console/applications/{app_id}/members",
                                     [("csrf", admin.csrf()), ("op", "associate"), ("ids", sid)]))
    assert "associated with the application" in page.body
    items = mgn.describe_source_servers(filters={"applicationIDs": [app_id]})["items"]
    assert [s["sourceServerID"] for s in items] == [sid]
    assert mgn.list_applications(filters={"applicationIDs": [app_id]})["items"][0]["description"] == "made here"
    page = _follow(admin, admin.post(f"/console/applications/{app_id}/update",
                                     {"csrf": admin.csrf(), "name": name + "-v2", "description": ""}))
    assert "saved" in page.body and html.escape(name + "-v2") in page.body
    assert mgn.list_applications(filters={"applicationIDs": [app_id]})["items"][0]["description"] == ""

    # Archiving waits for the members; a refused archive is flashed, an empty application archives.
    page = _follow(admin, admin.post("/console/applications/action", [
        ("csrf", admin.csrf()), ("action", "archive"), ("confirmed", "1"), ("ids", app_id), ("back", "/applications")]))
    assert "flash-error" in page.body and "archive them first" in page.body
    empty_id = _create(admin, "applications", f"empty-{secrets.token_hex(3)}", APP_LOCATION)
    confirm = admin.post("/console/applications/action", [("csrf", admin.csrf()), ("action", "archive"),
                                                          ("ids", empty_id), ("back", "/applications")])
    assert confirm.status == 200 and "Archive applications" in confirm.body and empty_id in confirm.body
    page = _follow(admin, admin.post("/console/applications/action", [
        ("csrf", admin.csrf()), ("action", "archive"), ("confirmed", "1"), ("ids", empty_id), ("back", "/applications")]))
    assert "Archive: done for 1 application" in page.body
    assert empty_id in admin.get("/console/applications?archived=1").body
    assert mgn.list_applications(filters={"applicationIDs": [empty_id]})["items"][0]["isArchived"] is True


def test_wave_launches_its_servers(console_env: ConsoleEnv, admin: ConsoleClient, mgn: Any) -> None:
    sid, waiting = _ready_server(console_env, "wave-web"), str(console_env.agent.register("wave-new")["sourceServerID"])
    app_id = mgn.create_application(name=f"shop-{secrets.token_hex(3)}")["applicationID"]
    mgn.associate_source_servers(applicationID=app_id, sourceServerIDs=[sid, waiting])
    wave_id = _create(admin, "waves", f"wave-{secrets.token_hex(3)}", WAVE_LOCATION)
    page = _follow(admin, admin.post(f"/console/waves/{wave_id}/members",
                                     [("csrf", admin.csrf()), ("op", "associate"), ("ids", app_id)]))
    assert app_id in page.body and "wave-web" in page.body and "Launch test instances" in page.body
    assert mgn.list_applications(filters={"waveIDs": [wave_id]})["items"][0]["applicationID"] == app_id

    def act(key: str) -> Response:
        confirm = admin.post(f"/console/waves/{wave_id}/servers-action", {"csrf": admin.csrf(), "action": key})
        assert confirm.status == 200 and sid in confirm.body
        return _follow(admin, admin.post(f"/console/waves/{wave_id}/servers-action",
                                         {"csrf": admin.csrf(), "action": key, "confirmed": "1"}))

    # The server still in its initial sync is excluded, as MGN's console does; the other is launched.
    page = act("launch_test")
    assert "job mgnjob-" in page.body and "1 source server(s) excluded" in page.body
    assert _state(mgn, sid) == "TESTING" and _state(mgn, waiting) == "NOT_READY"
    _finish_jobs(console_env, mgn, sid)
    act("mark_ready_for_cutover")
    assert _state(mgn, sid) == "READY_FOR_CUTOVER"
    _finish_jobs(console_env, mgn, sid)
    page = act("launch_cutover")
    assert "job mgnjob-" in page.body and _state(mgn, sid) == "CUTTING_OVER"
    _finish_jobs(console_env, mgn, sid)
    wave_page = admin.get(f"/console/waves/{wave_id}").body
    assert "In progress" in wave_page and "Cutover in progress" in wave_page

    # Nothing left in a state the action applies to: refused with the reason.
    page = _follow(admin, admin.post(f"/console/waves/{wave_id}/servers-action",
                                     {"csrf": admin.csrf(), "action": "mark_ready_for_cutover", "confirmed": "1"}))
    assert "flash-error" in page.body and "none of the 2 source servers" in page.body


def test_read_only_user_sees_no_actions(console_env: ConsoleEnv, admin: ConsoleClient, mgn: Any) -> None:
    app_id = mgn.create_application(name=f"ro-{secrets.token_hex(3)}")["applicationID"]
    viewer = ConsoleClient(console_env.endpoint)
    assert viewer.sign_in(*console_env.readonly_key).status == 303
    listing = viewer.get("/console/applications")
    assert listing.status == 200 and app_id in listing.body
    assert "Add application" not in listing.body and 'value="archive"' not in listing.body
    detail = viewer.get(f"/console/applications/{app_id}")
    assert detail.status == 200 and "Associate selected" not in detail.body and "Edit application" not in detail.body
    page = _follow(viewer, viewer.post("/console/applications/create", {"csrf": viewer.csrf(), "name": "nope"}))
    assert "flash-error" in page.body and "mgn:CreateApplication" in page.body
    assert viewer.get("/console/applications/app-0000000000000000a").status == 404
