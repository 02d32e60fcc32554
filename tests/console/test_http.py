"""The console over plain HTTP against a real server: sign-in, the session cookie, CSRF, IAM refusals."""

from __future__ import annotations

import re

import pytest

from console.conftest import ConsoleEnv
from console.httpclient import ConsoleClient


@pytest.fixture(scope="module")
def admin(console_env: ConsoleEnv) -> ConsoleClient:
    client = ConsoleClient(console_env.endpoint)
    assert client.sign_in(*console_env.admin_key).status == 303
    if "Set up service" in client.get("/console/getting-started").body:
        assert client.post("/console/initialize", {"csrf": client.csrf()}).status == 303
    return client


def test_console_root_leads_to_sign_in(console_env: ConsoleEnv) -> None:
    client = ConsoleClient(console_env.endpoint)
    first = client.get("/console")
    assert first.status == 307 and first.headers["location"] == "/console/"
    second = client.get("/console/")
    assert second.status == 303 and second.headers["location"] == "/console/signin"
    page = client.get("/console/signin")
    assert page.status == 200 and "Access key ID" in page.body


def test_wrong_secret_is_refused_without_a_session(console_env: ConsoleEnv) -> None:
    client = ConsoleClient(console_env.endpoint)
    resp = client.sign_in(console_env.admin_key[0], "not-the-secret")
    assert resp.status == 401
    assert "not valid" in resp.body
    assert not any(c.startswith("rehost_console=") for c in resp.set_cookies)
    assert client.get("/console/servers").status == 303  # still signed out


def test_session_cookie_is_httponly_strict_and_secret_stays_out_of_pages(console_env: ConsoleEnv, admin: ConsoleClient) -> None:
    client = ConsoleClient(console_env.endpoint)
    resp = client.sign_in(*console_env.admin_key)
    cookie = next(c for c in resp.set_cookies if c.startswith("rehost_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # plain http on loopback; https sets it
    secret = console_env.admin_key[1]
    assert secret not in cookie
    for path in ("/console/servers", "/console/jobs", "/console/replication-template", "/console/iam/users",
                 "/console/servers/add"):
        page = client.get(path)
        assert page.status == 200, path
        assert secret not in page.body, path
        assert "content-security-policy" in {k.lower() for k in page.headers}


def test_tampered_cookie_is_not_a_session(console_env: ConsoleEnv) -> None:
    client = ConsoleClient(console_env.endpoint)
    client.sign_in(*console_env.admin_key)
    for c in client.jar:
        if c.name == "rehost_console":
            sid, mac = c.value.rsplit(".", 1)
            c.value = f"{sid}.{'0' * len(mac)}"
    assert client.get("/console/servers").status == 303


def test_forms_without_the_csrf_token_are_refused(console_env: ConsoleEnv, admin: ConsoleClient) -> None:
    resp = admin.post("/console/replication-template", {"bandwidthThrottling": "5"})
    assert resp.status == 403 and "CSRF" in resp.body
    resp = admin.post("/console/replication-template", {"csrf": "forged", "bandwidthThrottling": "5"})
    assert resp.status == 403
    # The sign-in form is protected too (login CSRF): a post without the browser's pre-session cookie fails.
    bare = ConsoleClient(console_env.endpoint)
    resp = bare.post("/console/signin", {"csrf": "x", "access_key_id": console_env.admin_key[0],
                                         "secret_access_key": console_env.admin_key[1]})
    assert resp.status == 403


def test_read_only_user_sees_no_actions_and_a_forced_action_is_refused(console_env: ConsoleEnv, admin: ConsoleClient) -> None:
    sid = console_env.agent.register("ro-target")["sourceServerID"]
    console_env.agent.report_synced(sid)
    viewer = ConsoleClient(console_env.endpoint)
    assert viewer.sign_in(*console_env.readonly_key).status == 303
    listing = viewer.get("/console/servers")
    assert listing.status == 200 and "ro-target" in listing.body
    assert 'name="action"' not in listing.body and "Add server" in listing.body
    detail = viewer.get(f"/console/servers/{sid}")
    assert 'name="action"' not in detail.body
    assert "Save settings" not in viewer.get(f"/console/servers/{sid}?tab=launch").body

    forced = viewer.post("/console/servers/action", {"csrf": viewer.csrf(), "action": "launch_test", "confirmed": "1",
                                                     "sourceServerIDs": sid, "back": f"/servers/{sid}"})
    assert forced.status == 303
    page = viewer.get(f"/console/servers/{sid}")
    assert re.search(r"User: arn:aws:iam::\d+:user/viewer is not authorized to perform: mgn:StartTest", page.body)
    assert "Ready for testing" in page.body  # nothing happened
    assert "No jobs yet" in page.body

    # IAM pages: refused for a user without iam:* rights, with the API's message and 403.
    refused = viewer.get("/console/iam/users")
    assert refused.status == 403 and "iam:ListUsers" in refused.body


def test_launch_template_versions_need_the_ec2_actions(console_env: ConsoleEnv, admin: ConsoleClient) -> None:
    key = console_env.inline_user("mgn-only", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["mgn:*", "ec2:Describe*"], "Resource": "*"}]})
    sid = console_env.agent.register("ec2-rights")["sourceServerID"]
    client = ConsoleClient(console_env.endpoint)
    client.sign_in(*key)
    tab = client.get(f"/console/servers/{sid}?tab=launch")
    assert tab.status == 200 and "lt-versions" in tab.body
    assert "Create template version" not in tab.body and "Set default version" not in tab.body
    assert "Save settings" in tab.body  # mgn:UpdateLaunchConfiguration is allowed
    forced = client.post(f"/console/servers/{sid}/launch-template/versions", {
        "csrf": client.csrf(), "instanceType": "t3.micro", "publicIp": "on", "makeDefault": "on",
        "back": f"/servers/{sid}?tab=launch"})
    assert forced.status == 303
    page = client.get(f"/console/servers/{sid}?tab=launch")
    assert "You are not authorized to perform this operation." in page.body
    assert "ec2:CreateLaunchTemplateVersion" in page.body
    assert re.search(r'id="lt-instance-type">t3\.small<', page.body)  # no version was made
    # The admin (FullAccess includes rehost's EC2 operator actions) can.
    made = admin.post(f"/console/servers/{sid}/launch-template/versions", {
        "csrf": admin.csrf(), "instanceType": "t3.micro", "publicIp": "on", "makeDefault": "on",
        "back": f"/servers/{sid}?tab=launch"})
    assert made.status == 303
    assert re.search(r'id="lt-instance-type">t3\.micro<', admin.get(f"/console/servers/{sid}?tab=launch").body)


def test_inline_iam_policy_opens_the_iam_pages(console_env: ConsoleEnv) -> None:
    key = console_env.inline_user("iam-operator", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["iam:*", "mgn:Describe*"], "Resource": "*"}]})
    client = ConsoleClient(console_env.endpoint)
    client.sign_in(*key)
    page = client.get("/console/iam/users")
    assert page.status == 200 and "Create user" in page.body and "viewer" in page.body


def test_iam_errors_are_shown_with_their_message(console_env: ConsoleEnv, admin: ConsoleClient) -> None:
    created = admin.post("/console/iam/users", {"csrf": admin.csrf(), "userName": "dup-user",
                                                 "policy": "AWSApplicationMigrationAgentPolicy", "back": "/iam/users"})
    assert created.status == 303 and created.headers["location"] == "/console/iam/users/dup-user"
    assert "AWSApplicationMigrationAgentPolicy" in admin.get("/console/iam/users/dup-user").body
    again = admin.post("/console/iam/users", {"csrf": admin.csrf(), "userName": "dup-user", "back": "/iam/users"})
    assert again.status == 303 and again.headers["location"] == "/console/iam/users"
    assert "User with name dup-user already exists." in admin.get("/console/iam/users").body
    for _ in range(2):
        admin.post("/console/iam/users/dup-user/access-keys", {"csrf": admin.csrf(), "back": "/iam/users/dup-user"})
    third = admin.post("/console/iam/users/dup-user/access-keys", {"csrf": admin.csrf(), "back": "/iam/users/dup-user"})
    assert third.status == 303
    assert "AccessKeysPerUser: 2" in admin.get("/console/iam/users/dup-user").body


def test_live_refresh_returns_only_the_block(console_env: ConsoleEnv, admin: ConsoleClient) -> None:
    resp = admin.get("/console/servers", headers={"X-Live": "rows"})
    assert resp.status == 200
    assert resp.body.lstrip().startswith("<table") and "<html" not in resp.body
    signed_out = ConsoleClient(console_env.endpoint).get("/console/servers", headers={"X-Live": "rows"})
    assert signed_out.status == 401


def test_every_live_region_is_served_as_its_block(console_env: ConsoleEnv, admin: ConsoleClient) -> None:
    sid = console_env.agent.register("live-regions")["sourceServerID"]
    console_env.agent.report_synced(sid)
    started = admin.post("/console/servers/action", {"csrf": admin.csrf(), "action": "launch_test", "confirmed": "1",
                                                     "sourceServerIDs": sid, "back": f"/servers/{sid}"})
    assert started.status == 303
    job_id = re.search(r"job (mgnjob-[0-9a-f]+) started", admin.get(f"/console/servers/{sid}").body)
    assert job_id, "the launch flashed no job ID"
    pages = ["/console/servers", f"/console/servers/{sid}", "/console/jobs", f"/console/jobs/{job_id.group(1)}"]
    seen = 0
    for path in pages:
        page = admin.get(path)
        for block in re.findall(r'data-live="([^"]+)"', page.body):
            part = admin.get(path, headers={"X-Live": block})
            assert part.status == 200, (path, block)
            assert "<html" not in part.body and "topbar" not in part.body, (path, block)
            seen += 1
    assert seen >= 4
    assert admin.get("/console/servers", headers={"X-Live": "no-such-block"}).status == 400


def test_filters_and_an_action_on_several_selected_servers(console_env: ConsoleEnv, admin: ConsoleClient) -> None:
    a = console_env.agent.register("multi-a")["sourceServerID"]
    b = console_env.agent.register("multi-b")["sourceServerID"]
    console_env.agent.report_synced(a)
    ready = admin.get("/console/servers?lifecycle=READY_FOR_TEST").body
    not_ready = admin.get("/console/servers?lifecycle=NOT_READY").body
    assert "multi-a" in ready and "multi-b" not in ready
    assert "multi-b" in not_ready and "multi-a" not in not_ready

    form = [("csrf", admin.csrf()), ("action", "disconnect"), ("back", "/servers"),
            ("sourceServerIDs", a), ("sourceServerIDs", b)]
    asking = admin.post("/console/servers/action", form)  # without the dialog's confirmation: a page asks
    assert asking.status == 200 and "Disconnect from service" in asking.body and a in asking.body and b in asking.body
    done = admin.post("/console/servers/action", [*form, ("confirmed", "1")])
    assert done.status == 303
    page = admin.get("/console/servers?lifecycle=DISCONNECTED").body
    assert "Disconnect from service: done for 2 servers." in page
    assert "multi-a" in page and "multi-b" in page

    archived = admin.post("/console/servers/action", [("csrf", admin.csrf()), ("action", "mark_archived"),
                                                       ("confirmed", "1"), ("back", "/servers"), ("sourceServerIDs", a)])
    assert archived.status == 303
    active = admin.get("/console/servers").body
    assert "multi-a" not in active and "multi-b" in active
    assert "multi-a" in admin.get("/console/servers?archived=1").body


def test_add_server_builds_the_installer_command(console_env: ConsoleEnv, admin: ConsoleClient) -> None:
    page = admin.post("/console/servers/add", {"csrf": admin.csrf(), "mode": "typed",
                                               "access_key_id": "AKIAEXAMPLEEXAMPLE", "secret_access_key": "s3cr3t"})
    assert page.status == 200
    ep = console_env.endpoint
    assert f"wget -O ./rehost-replication-installer-init {ep}/installer/linux/rehost-replication-installer-init" in page.body
    assert (f"sudo python3 rehost-replication-installer-init --region us-east-1 --aws-access-key-id AKIAEXAMPLEEXAMPLE "
            f"--aws-secret-access-key s3cr3t --endpoint {ep}") in page.body


def test_sign_out_ends_the_session(console_env: ConsoleEnv) -> None:
    client = ConsoleClient(console_env.endpoint)
    client.sign_in(*console_env.admin_key)
    token = client.csrf()
    cookie = next(c.value for c in client.jar if c.name == "rehost_console")
    assert client.post("/console/signout", {"csrf": token}).status == 303
    assert client.get("/console/servers").status == 303
    # The session is gone on the server too: replaying the old cookie does not sign in.
    replay = client.get("/console/servers", headers={"cookie": f"rehost_console={cookie}"})
    assert replay.status == 303 and replay.headers["location"].endswith("/signin")
