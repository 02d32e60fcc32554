"""After installation an agent signs with a key of its own, for its own source server only: installer
credentials limited to AWSApplicationMigrationAgentInstallationPolicy are enough to install, a reinstall
replaces the agent's key, and deleting the server revokes it."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from helpers import cli_json, rehost_cli

from .agentapi import AgentApiError, AgentClient
from .conftest import Api


def _installer(api: Api, user: str, policy: str) -> AgentClient:
    cli_json("iam", "create-user", user, data_dir=api.server.data_dir, env=api.server.env)
    rehost_cli("iam", "attach-user-policy", user, policy, data_dir=api.server.data_dir, env=api.server.env)
    key = api.server.access_key(user)
    return AgentClient(api.server.endpoint, *key, data_dir=api.server.data_dir)


def _as_agent(api: Api, reply: dict) -> AgentClient:
    creds = reply["agentCredentials"]
    return AgentClient(api.server.endpoint, creds["accessKeyId"], creds["secretAccessKey"],
                       data_dir=api.server.data_dir)


def _code(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(AgentApiError) as exc:
        call()
    return exc.value.code


def test_installation_policy_installs_and_the_agent_key_is_scoped_to_its_server(api: Api) -> None:
    installer = _installer(api, "installer", "AWSApplicationMigrationAgentInstallationPolicy")
    reply = installer.register(user_provided_id="scoped-1")
    sid = reply["sourceServerID"]
    other = api.agent.register()["sourceServerID"]
    # The installer's own key may register, not run the agent.
    assert _code(lambda: installer.call("GetAgentCommandForMgn", {"sourceServerID": sid})) == "AccessDeniedException"

    agent = _as_agent(api, reply)
    assert agent.call("GetAgentCommandForMgn", {"sourceServerID": sid}) == {"commands": []}
    agent.report_synced(sid)
    state = api.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]["lifeCycle"]["state"]
    assert state == "READY_FOR_TEST"
    # Not another server's calls, not the public API.
    assert _code(lambda: agent.call("GetAgentCommandForMgn", {"sourceServerID": other})) == "AccessDeniedException"
    assert _code(lambda: agent.call("UpdateAgentReplicationInfoForMgn", {
        "sourceServerID": other, "dataReplicationState": "CONTINUOUS"})) == "AccessDeniedException"
    mgn = api.server.client((agent.access_key, agent.secret_key))
    with pytest.raises(ClientError) as exc:
        mgn.describe_source_servers(filters={})
    assert exc.value.response["Error"]["Code"] == "AccessDeniedException"


def test_reinstall_replaces_the_key_and_delete_revokes_it(api: Api) -> None:
    installer = _installer(api, "installer2", "AWSApplicationMigrationAgentPolicy")
    first = installer.register(user_provided_id="rotated-1")
    again = installer.register(user_provided_id="rotated-1")
    sid = first["sourceServerID"]
    assert again["sourceServerID"] == sid
    old, new = _as_agent(api, first), _as_agent(api, again)
    assert old.access_key != new.access_key
    assert _code(lambda: old.call("GetAgentCommandForMgn", {"sourceServerID": sid})) == "UnrecognizedClientException"
    assert new.call("GetAgentCommandForMgn", {"sourceServerID": sid}) == {"commands": []}

    api.mgn.disconnect_from_service(sourceServerID=sid)
    api.mgn.delete_source_server(sourceServerID=sid)
    assert _code(lambda: new.call("GetAgentCommandForMgn", {"sourceServerID": sid})) == "UnrecognizedClientException"
    users = cli_json("iam", "list-users", data_dir=api.server.data_dir, env=api.server.env)["Users"]
    assert f"mgn-agent-{sid}" not in [u["UserName"] for u in users]
