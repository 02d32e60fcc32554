"""The hands-on's flow through the console in headless Chromium, against a real server (issue 5's test).

Set up the service, edit the replication template, create MGNuser with the agent policy and its key,
register a source server with that key (playing the agent over the agent API), switch right-sizing off,
make a t3.micro launch template version the default, launch a test, mark ready for cutover, launch the
cutover, finalize and archive. The fake source has no replication stream, so the launch jobs fail at the
snapshot step and the job log says so; finalizing is then refused with the API's message and the server
is disconnected before archiving. A read-only user's session is refused an action.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from api.agentapi import AgentApiError, AgentClient
from console.browser import Shots, chromium, sign_in
from console.conftest import ARTIFACTS
from helpers import RunningServer, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]
WAIT = 60_000  # ms: how long a live page may take to show a state the server reaches


class CommandAnswerer(threading.Thread):
    """Plays the source's agent for launch jobs: it has no replication stream, so it answers every
    snapshot command FAILED, as a real agent that cannot reach its replication server would."""

    def __init__(self, agent: AgentClient, server_id: str) -> None:
        super().__init__(daemon=True)
        self.agent, self.server_id = agent, server_id
        self.stop = threading.Event()
        self.release = threading.Event()  # hold commands until set, so a job can be watched while it runs

    def run(self) -> None:
        while not self.stop.wait(0.5):
            if not self.release.is_set():
                continue
            try:
                commands = self.agent.call("GetAgentCommandForMgn", {"sourceServerID": self.server_id})["commands"]
                results = [{"commandID": c["commandID"], "status": "FAILED",
                            "message": "this source has no replication stream to snapshot"}
                           for c in commands if c["type"] in ("SNAPSHOT", "SYNC_SNAPSHOT")]
                if results:
                    self.agent.call("UpdateAgentReplicationInfoForMgn",
                                    {"sourceServerID": self.server_id, "commandResults": results})
            except (AgentApiError, OSError):
                continue  # e.g. the server is disconnected at the end of the flow


@pytest.fixture()
def server() -> Iterator[RunningServer]:
    base = Path(tempfile.mkdtemp(prefix="rehost-console-flow-"))
    srv = RunningServer(base / "data", free_port()).start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)


def confirm(page: Page, menu: str, item: str, shots: Shots | None = None) -> None:
    """Choose ``item`` in the page's ``menu`` and confirm the dialog, which says what will happen."""
    page.locator("summary", has_text=menu).click()
    if shots:
        shots.take(page, "menu")
    page.get_by_role("button", name=item, exact=True).click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#confirm-title")).to_have_text(f"{item}?")
    assert len(dialog.locator("#confirm-text").inner_text()) > 40  # a sentence about the consequences
    expect(dialog.locator("#confirm-servers")).to_contain_text("mgn-workshop-src")
    if shots:
        page.screenshot(path=str(shots.directory / f"{shots.count + 1:02d}-confirm-dialog.png"))
        shots.count += 1
    dialog.get_by_role("button", name=item, exact=True).click()


def test_hands_on_flow(server: RunningServer) -> None:
    out = ARTIFACTS / "flow"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shots = Shots(out)
    admin_key = server.access_key()
    ep = server.endpoint
    with chromium() as browser:
        page = shots.watch(browser.new_page(viewport={"width": 1280, "height": 900}))
        page.goto(f"{ep}/console")
        shots.take(page, "signin")
        sign_in(page, ep, admin_key)

        # Step 2: set up the service; the default template is t3.small / gp3.
        expect(page.get_by_role("button", name="Set up service")).to_be_visible()
        shots.take(page, "getting-started")
        page.get_by_role("button", name="Set up service").click()
        expect(page.locator("#rt-view-type")).to_have_text("t3.small")
        expect(page.locator("#rt-view-disk")).to_contain_text("gp3")
        shots.take(page, "replication-template")
        page.get_by_role("link", name="Edit").click()
        page.get_by_label("Throttle network bandwidth").fill("100")
        page.get_by_label("Tags").fill("project=mgn-handson")
        shots.take(page, "replication-template-edit")
        page.get_by_role("button", name="Save template").click()
        expect(page.locator("#rt-view-bw")).to_have_text("100 Mbps")
        expect(page.get_by_text("project=mgn-handson")).to_be_visible()

        # Step 1: MGNuser with the agent policy, and its access key (the secret shown once).
        page.get_by_role("link", name="Users").click()
        page.get_by_label("User name").fill("MGNuser")
        page.get_by_label("AWSApplicationMigrationAgentPolicy").check()
        shots.take(page, "iam-users")
        page.get_by_role("button", name="Create user").click()
        expect(page.locator("#attached-policies")).to_contain_text("AWSApplicationMigrationAgentPolicy")
        page.get_by_role("button", name="Create access key").click()
        key = (page.locator("#new-key-id").inner_text().strip(), page.locator("#new-key-secret").inner_text().strip())
        assert key[0].startswith("AKIA") and len(key[1]) >= 30
        shots.take(page, "iam-access-key")
        page.goto(f"{ep}/console/iam/users/MGNuser")
        expect(page.locator("main")).to_contain_text(key[0])
        assert key[1] not in page.content()  # never shown again

        # Add server: the installer command with MGNuser's key and this control plane's endpoint.
        page.goto(f"{ep}/console/servers/add")
        page.get_by_label("Use an access key I have").check()
        page.get_by_label("Access key ID").fill(key[0])
        page.get_by_label("Secret access key").fill(key[1])
        page.get_by_role("button", name="Build installation command").click()
        command = page.locator("#install-command").inner_text()
        assert f"{ep}/installer/linux/rehost-replication-installer-init" in command
        assert f"--aws-access-key-id {key[0]}" in command and f"--endpoint {ep}" in command
        shots.take(page, "add-server")

        # Step 4: the agent registers with MGNuser's key; the list shows it, then "Ready for testing" live.
        agent = AgentClient(ep, *key, data_dir=server.data_dir)
        sid = agent.register("mgn-workshop-src")["sourceServerID"]
        page.goto(f"{ep}/console/servers")
        row = page.locator("tr", has_text="mgn-workshop-src")
        expect(row).to_contain_text("Not ready")
        shots.take(page, "servers-not-ready")
        agent.report_synced(sid)
        expect(row).to_contain_text("Ready for testing", timeout=WAIT)  # no reload: the page refreshes itself
        expect(row).to_contain_text("Launch test instance")
        shots.take(page, "servers-ready")

        # Server info: recommended c5.large beside the launch template's type, with vCPUs, memory, price.
        row.get_by_role("link", name="mgn-workshop-src").click()
        page.get_by_role("link", name="Server info").click()
        table = page.locator("#instance-comparison")
        expect(table).to_contain_text("c5.large")
        expect(table).to_contain_text("USD 0.085")
        shots.take(page, "server-info")

        # Step 5: right-sizing off; a t3.micro version with a public IP becomes the template's default.
        page.get_by_role("link", name="Launch settings").click()
        page.get_by_label("Instance type right sizing").uncheck()
        page.get_by_role("button", name="Save settings").click()
        expect(page.locator("#right-sizing-state")).to_have_text("Off")
        template_id = page.locator("#lt-id").inner_text()
        assert template_id.startswith("lt-")
        page.get_by_label("Instance type", exact=True).select_option("t3.micro")
        page.get_by_label("Auto-assign public IP").check()
        page.get_by_label("Set as default version").check()
        page.get_by_role("button", name="Create template version").click()
        expect(page.locator("#lt-instance-type")).to_have_text("t3.micro")
        expect(page.locator("#lt-id")).to_have_text(template_id)
        default_row = page.locator("#lt-versions tbody tr", has=page.locator(".badge", has_text="Default"))
        expect(default_row).to_contain_text("t3.micro")
        expect(default_row).to_contain_text("Enable")
        shots.take(page, "launch-settings")
        page.get_by_role("link", name="Server info").click()
        expect(page.locator("#instance-comparison")).to_contain_text("USD 0.0104")

        # Replication settings and tags of the server.
        page.get_by_role("link", name="Replication settings").click()
        page.get_by_label("Bandwidth throttling").fill("50")
        page.get_by_role("button", name="Save replication settings").click()
        expect(page.get_by_label("Bandwidth throttling")).to_have_value("50")
        shots.take(page, "replication-settings")
        page.get_by_role("link", name="Tags").click()
        page.get_by_label("Key").fill("env")
        page.get_by_label("Value").fill("handson")
        page.get_by_role("button", name="Add tag").click()
        expect(page.locator("main table")).to_contain_text("handson")
        shots.take(page, "tags")

        # Step 6: launch a test; follow the job; its log shows the job's honest outcome as it runs.
        answerer = CommandAnswerer(agent, sid)
        answerer.start()
        try:
            page.get_by_role("link", name="Migration dashboard").click()
            confirm(page, "Test and cutover", "Launch test instances", shots)
            expect(page.locator(".flash-success")).to_contain_text("job")
            expect(page.locator(".summary-bar")).to_contain_text("Test in progress")
            shots.take(page, "test-launched")
            page.get_by_role("link", name="View job details").click()
            log = page.locator("#job-log")
            expect(log).to_contain_text("Snapshot started", timeout=WAIT)
            expect(page.locator("#job-status")).to_contain_text("Started")
            shots.take(page, "test-job-running")
            page.evaluate("window.stillThisPage = true")
            answerer.release.set()  # the agent answers now: the log grows while we watch
            expect(page.locator("#job-status")).to_contain_text("Completed", timeout=WAIT)
            assert page.evaluate("window.stillThisPage === true")  # updated in place, not reloaded
            launched = "Launch started" in log.inner_text() and "Launch failed" not in log.inner_text()
            if not launched:
                expect(log.locator("tr.row-error")).not_to_have_count(0)
            shots.take(page, "test-job")

            # Mark as ready for cutover, by keyboard only.
            page.goto(f"{ep}/console/servers/{sid}")
            page.locator("summary", has_text="Test and cutover").focus()
            page.keyboard.press("Enter")
            mark = page.get_by_role("button", name="Mark as ready for cutover", exact=True)
            mark.focus()
            page.keyboard.press("Enter")
            dialog = page.locator("#confirm-dialog")
            expect(dialog).to_be_visible()
            dialog.get_by_role("button", name="Mark as ready for cutover").focus()
            page.keyboard.press("Enter")
            expect(page.locator(".summary-bar")).to_contain_text("Ready for cutover")
            shots.take(page, "ready-for-cutover")

            # Step 7: cutover.
            confirm(page, "Test and cutover", "Launch cutover instances")
            expect(page.locator(".summary-bar")).to_contain_text("Cutover in progress")
            page.get_by_role("link", name="View job details").click()
            expect(page.locator("#job-status")).to_contain_text("Completed", timeout=WAIT)
            shots.take(page, "cutover-job")
            page.goto(f"{ep}/console/servers/{sid}")
            confirm(page, "Test and cutover", "Finalize cutover")
            errors = page.locator(".flash-error")
            if errors.count():
                # No cutover instance was launched: the API's own refusal is shown, and nothing changed.
                expect(errors).to_contain_text("has no launched cutover instance to finalize")
                expect(page.locator(".summary-bar")).to_contain_text("Cutover in progress")
                shots.take(page, "finalize-refused")
                confirm(page, "Actions", "Disconnect from service")
                expect(page.locator(".summary-bar")).to_contain_text("Disconnected")
            else:
                expect(page.locator(".summary-bar")).to_contain_text("Cutover complete")
                expect(page.locator(".summary-bar")).to_contain_text("Disconnected")
            shots.take(page, "replication-disconnected")
            confirm(page, "Actions", "Mark as archived")
            expect(page.locator(".summary-bar")).to_contain_text("Archived")
            shots.take(page, "archived")
        finally:
            answerer.stop.set()

        page.goto(f"{ep}/console/servers")
        expect(page.locator("tr", has_text="mgn-workshop-src")).to_have_count(0)
        page.get_by_label("View").select_option("1")
        expect(page.locator("tr", has_text="mgn-workshop-src")).to_contain_text("Archived")
        shots.take(page, "servers-archived")
        page.goto(f"{ep}/console/jobs")
        expect(page.locator("table")).to_contain_text("Launch cutover instances")
        shots.take(page, "jobs")

        page.get_by_role("link", name="Launch template").click()
        expect(page.locator("main")).to_contain_text("Instance type right sizing")
        shots.take(page, "launch-template")

        # A narrow window: the navigation folds away behind a button that opens it.
        page.set_viewport_size({"width": 400, "height": 850})
        page.goto(f"{ep}/console/servers?archived=1")
        shots.take(page, "narrow-servers")
        page.goto(f"{ep}/console/servers/{sid}")
        shots.take(page, "narrow-server")
        page.get_by_role("button", name="Menu").click()
        expect(page.get_by_role("link", name="Launch history")).to_be_visible()
        shots.take(page, "narrow-nav")
        page.close()

        # A read-only user's session sees no actions, and forcing one is refused with the API's message.
        from helpers import rehost_cli

        rehost_cli("iam", "create-user", "viewer", data_dir=server.data_dir)
        rehost_cli("iam", "attach-user-policy", "viewer", "AWSApplicationMigrationReadOnlyAccess", data_dir=server.data_dir)
        other = agent.register("web-2")["sourceServerID"]
        agent.report_synced(other)
        viewer = shots.watch(browser.new_page(viewport={"width": 1280, "height": 900}))
        sign_in(viewer, ep, server.access_key("viewer"))
        viewer.goto(f"{ep}/console/servers/{other}")
        expect(viewer.locator(".summary-bar")).to_contain_text("Ready for testing")
        expect(viewer.locator("summary", has_text="Test and cutover")).to_have_count(0)
        expect(viewer.get_by_role("link", name="Users")).to_have_count(0)
        viewer.evaluate("""([sid]) => {
            const f = document.createElement('form');
            f.method = 'post'; f.action = '/console/servers/action';
            const add = (n, v) => { const i = document.createElement('input'); i.type = 'hidden'; i.name = n; i.value = v; f.appendChild(i); };
            add('csrf', document.querySelector('input[name=csrf]').value);
            add('action', 'launch_test'); add('confirmed', '1'); add('sourceServerIDs', sid); add('back', '/servers/' + sid);
            document.body.appendChild(f); f.submit();
        }""", [other])
        expect(viewer.locator(".flash-error")).to_contain_text(
            re.compile(r"user/viewer is not authorized to perform: mgn:StartTest"))
        expect(viewer.locator(".summary-bar")).to_contain_text("Ready for testing")
        shots.take(viewer, "readonly-refused")
        viewer.close()

    assert shots.errors == [], shots.errors
