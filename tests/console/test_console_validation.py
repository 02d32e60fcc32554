"""The console goes through the API's own front door: what the model forbids is refused with the API's
ValidationException message on the page, and nothing is stored; IAM sees the request's own context."""

from __future__ import annotations

import html
from typing import Any

import pytest

from console.conftest import ConsoleEnv
from console.httpclient import ConsoleClient


@pytest.fixture(scope="module")
def mgn(console_env: ConsoleEnv) -> Any:
    """The admin's boto3 client, the service initialized."""
    client = console_env.server.client(console_env.admin_key)
    client.initialize_service()
    return client


@pytest.fixture(scope="module")
def admin(console_env: ConsoleEnv, mgn: Any) -> ConsoleClient:
    client = ConsoleClient(console_env.endpoint)
    assert client.sign_in(*console_env.admin_key).status == 303
    return client


def _plain(response: dict[str, Any]) -> dict[str, Any]:
    """A boto3 response without its ResponseMetadata (which carries the date)."""
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def _post_and_read(client: ConsoleClient, path: str, form: dict[str, str], back: str) -> str:
    """Post a form as the page would, then the page it leads back to, as text (with its flashes)."""
    resp = client.post(path, {"csrf": client.csrf(), "back": back, **form})
    assert resp.status == 303, resp.body[:500]
    assert resp.headers["location"].endswith(back), resp.headers["location"]
    return html.unescape(client.get(resp.headers["location"]).body)


def test_server_replication_settings_are_validated_by_the_model(console_env: ConsoleEnv, admin: ConsoleClient,
                                                                mgn: Any) -> None:
    sid = console_env.agent.register("validated")["sourceServerID"]
    before = _plain(mgn.get_replication_configuration(sourceServerID=sid))
    path, back = f"/console/servers/{sid}/replication", f"/servers/{sid}?tab=replication"
    base = {"replicationServerInstanceType": before["replicationServerInstanceType"], "disk:/dev/sda": "GP3"}

    page = _post_and_read(admin, path, {**base, "bandwidthThrottling": "-5"}, back)
    assert ("Value at 'bandwidthThrottling' failed to satisfy constraint: "
            "Member must have value greater than or equal to 0") in page
    page = _post_and_read(admin, path, {**base, "bandwidthThrottling": "10001"}, back)
    assert "Member must have value less than or equal to 10000" in page
    page = _post_and_read(admin, path, {**base, "bandwidthThrottling": "fast"}, back)
    assert "Value at 'bandwidthThrottling' failed to satisfy constraint: Member must be an integer" in page
    page = _post_and_read(admin, path, {**base, "bandwidthThrottling": "5", "disk:/dev/sda": "FLOPPY"}, back)
    assert "Value at 'replicatedDisks[0].stagingDiskType' failed to satisfy constraint: Member must satisfy enum" in page
    assert _plain(mgn.get_replication_configuration(sourceServerID=sid)) == before  # nothing stored

    page = _post_and_read(admin, path, {**base, "bandwidthThrottling": "25"}, back)
    assert "Replication settings saved." in page
    after = mgn.get_replication_configuration(sourceServerID=sid)
    assert after["bandwidthThrottling"] == 25 and after["replicatedDisks"][0]["stagingDiskType"] == "GP3"


def test_replication_template_is_validated_by_the_model(admin: ConsoleClient, mgn: Any) -> None:
    def template() -> dict[str, Any]:
        return _plain(mgn.describe_replication_configuration_templates()["items"][0])

    before = template()
    form = {"replicationServerInstanceType": "t3.small", "defaultLargeStagingDiskType": "GP3",
            "bandwidthThrottling": "0", "dataPlaneRouting": "PRIVATE_IP", "stagingAreaTags": ""}
    page = _post_and_read(admin, "/console/replication-template", {**form, "bandwidthThrottling": "-1"},
                          "/replication-template")
    assert "Value at 'bandwidthThrottling' failed to satisfy constraint" in page
    page = _post_and_read(admin, "/console/replication-template", {**form, "defaultLargeStagingDiskType": "FLOPPY"},
                          "/replication-template")
    assert ("Value at 'defaultLargeStagingDiskType' failed to satisfy constraint: "
            "Member must satisfy enum value set: [GP2, ST1, GP3]") in page
    assert template() == before


def test_iam_conditions_see_the_browsers_address(console_env: ConsoleEnv, admin: ConsoleClient, mgn: Any) -> None:
    key = console_env.inline_user("from-desk", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "mgn:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "mgn:StartTest", "Resource": "*",
         "Condition": {"NotIpAddress": {"aws:SourceIp": "127.0.0.5/32"}}}]})
    sid = console_env.agent.register("desk-only")["sourceServerID"]
    desk, elsewhere = (ConsoleClient(console_env.endpoint, source_address=a) for a in ("127.0.0.5", "127.0.0.6"))
    for client in (desk, elsewhere):
        assert client.sign_in(*key).status == 303
    assert 'value="launch_test"' in desk.get(f"/console/servers/{sid}").body
    page = elsewhere.get(f"/console/servers/{sid}").body
    assert 'value="launch_test"' not in page and 'value="disconnect"' in page
    page = _post_and_read(elsewhere, "/console/servers/action", {
        "action": "launch_test", "confirmed": "1", "sourceServerIDs": sid}, f"/servers/{sid}")
    assert "not authorized to perform: mgn:StartTest" in page and "explicit deny" in page
    assert mgn.describe_jobs()["items"] == []


def test_an_oversized_form_is_refused_without_being_read_whole(console_env: ConsoleEnv, admin: ConsoleClient,
                                                               mgn: Any) -> None:
    """Forms are read with a cap (256 KiB), signed in or not: a bigger body is 413 and changes nothing."""
    before = _plain(mgn.describe_replication_configuration_templates())
    big = {"csrf": admin.csrf(), "back": "/replication-template", "bandwidthThrottling": "1" * (300 * 1024)}
    resp = admin.post("/console/replication-template", big)
    assert resp.status == 413 and "at most 262144 bytes" in resp.body
    assert _plain(mgn.describe_replication_configuration_templates()) == before
    stranger = ConsoleClient(console_env.endpoint)
    page = stranger.get("/console/signin")
    resp = stranger.post("/console/signin", {"csrf": page.csrf(), "access_key_id": "A" * (300 * 1024),
                                             "secret_access_key": "x"})
    assert resp.status == 413
    # The console still serves.
    assert admin.get("/console/servers").status == 200
