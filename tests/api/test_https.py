"""`rehost server --tls`: the API, the agent API and the console over HTTPS, trusted through the data
directory's CA, so an agent's credentials (returned by RegisterAgentForMgn) never cross the network in
clear text."""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import RunningServer, free_port, rehost_cli
from rehost.agent.control import AgentApiClient
from rehost.agent.sigv4 import Credentials
from rehost.errors import RehostError


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp("https") / "data"
    running = RunningServer(data_dir, free_port(), tls=True).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def key(server: RunningServer) -> tuple[str, str]:
    return server.access_key()


def test_boto3_over_https_with_the_data_directory_ca(server: RunningServer, key: tuple[str, str]) -> None:
    mgn = server.client(key)
    mgn.initialize_service()
    assert mgn.describe_source_servers()["items"] == []


def test_the_agent_registers_over_https_and_gets_its_key(server: RunningServer, key: tuple[str, str]) -> None:
    server.client(key).initialize_service()
    agent = AgentApiClient(server.endpoint, "us-east-1", Credentials(*key), ca_bundle=server.ca_bundle)
    answer = agent.register_agent(
        hints={"hostname": "tls-web", "macAddresses": ["52:54:00:aa:bb:cc"]},
        source_properties={"ramBytes": 1 << 30, "cpus": [{"cores": 1, "modelName": "QEMU"}],
                           "os": {"fullString": "Debian GNU/Linux 12"}},
        devices=[{"deviceName": "/dev/sda", "bytes": 1 << 30, "isBoot": True}])
    assert answer["sourceServerID"].startswith("s-")
    assert answer["agentCredentials"]["secretAccessKey"]


def test_an_untrusted_client_is_refused_by_tls(server: RunningServer, key: tuple[str, str]) -> None:
    """Without the CA the handshake fails: nothing is sent to a server the client cannot verify."""
    agent = AgentApiClient(server.endpoint, "us-east-1", Credentials(*key))
    with pytest.raises(RehostError, match="CERTIFICATE_VERIFY_FAILED"):
        agent.call("GetAgentCommandForMgn", {"sourceServerID": "s-00000000000000000"})
    with pytest.raises(OSError):  # plain HTTP to the TLS port: the server hangs up
        urllib.request.urlopen(server.endpoint.replace("https", "http") + "/healthz", timeout=5)


def test_console_over_https(server: RunningServer) -> None:
    context = ssl.create_default_context(cafile=server.ca_bundle)
    with urllib.request.urlopen(f"{server.endpoint}/console", timeout=10, context=context) as resp:
        assert resp.status == 200
        assert b"<form" in resp.read()


def test_tls_flags_are_checked(tmp_path: Path) -> None:
    proc = rehost_cli("server", "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(tmp_path / "k.pem"),
                      data_dir=tmp_path / "d", check=False)
    assert proc.returncode != 0
    assert "missing.pem: no such file" in proc.stderr and "Traceback" not in proc.stderr
    proc = rehost_cli("server", "--tls-cert", str(tmp_path / "c.pem"), data_dir=tmp_path / "d", check=False)
    assert proc.returncode != 0 and "--tls-cert and --tls-key go together" in proc.stderr
