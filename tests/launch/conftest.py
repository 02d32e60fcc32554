"""Fixtures of the launch tests. Images are shared with the target and image suites (session-scoped):
``tiny_disk`` (from tests/targets) is a boot sector that prints `TINY_TEXT` on COM1 and halts; SeaBIOS boots
it from the target's virtio disk in under a second under TCG, so the fast tests run the real target.

``launch_env`` is a real `rehost server` plus, in this process on the same data directory, the
`Ec2Service` and `TargetLauncher` its job runner uses: launches are made here exactly as a job makes them,
and everything after is observed through the server's EC2 API.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.agentapi import AgentClient
from helpers import RunningServer, free_port
from rehost.api.mgn.service import Account
from rehost.controlplane import account_id_for
from rehost.db import repo
from rehost.db.store import Store
from rehost.jobs.interfaces import ConvertedDisk, LaunchRequest
from rehost.launch.launcher import TargetLauncher
from rehost.launch.service import Ec2Service
from rehost.launch.sizing import make_sizer
from rehost.targets.qemu import QemuTarget
from targets.conftest import TINY_TEXT, tiny_disk  # noqa: F401  (session fixture)

GUEST_BANNER = TINY_TEXT.strip()


@dataclass
class LaunchEnv:
    server: RunningServer
    key: tuple[str, str]
    mgn: Any
    ec2: Any
    agent: AgentClient
    local: Ec2Service
    launcher: TargetLauncher


@pytest.fixture
def launch_env() -> Iterator[LaunchEnv]:
    base = Path(tempfile.mkdtemp(prefix="rehost-launch-"))
    data = base / "data"
    server = RunningServer(data, free_port()).start()
    store = Store(f"sqlite:///{data / 'rehost.db'}")
    target = QemuTarget(data / "instances", accel="tcg")
    local = Ec2Service(store, Account(account_id_for(data), "us-east-1"), target, data / "instances")
    try:
        key = server.access_key()
        mgn = server.client(key)
        mgn.initialize_service()
        yield LaunchEnv(server, key, mgn, server.client(key, service="ec2"), AgentClient(server.endpoint, *key),
                        local, TargetLauncher(local))
    finally:
        for inst in target.list():
            target.terminate(inst.instance_id)
        server.stop()
        store.close()
        shutil.rmtree(base, ignore_errors=True)


def wait_state(ec2: Any, instance_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        (res,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        inst: dict[str, Any] = res["Instances"][0]
        if inst["State"]["Name"] == state or time.monotonic() > deadline:
            return inst
        time.sleep(0.3)


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def size_and_launch(env: LaunchEnv, server_id: str, image: Path) -> tuple[dict[str, Any], tuple[str, int, int]]:
    with env.local.store.read() as conn:
        server = repo.load_server(conn, server_id)
    size = make_sizer(env.local.default_version_data)(server)
    result = env.launcher.launch(LaunchRequest(
        source_server_id=server_id, job_id="mgnjob-0123456789abcdef0", instance_type=size[0], vcpus=size[1],
        memory_mib=size[2], disk=ConvertedDisk(image)))
    return result, size



def step5(env: LaunchEnv, server_id: str) -> None:
    """Hands-on Step 5: right-sizing off, a t3.micro version with a public IP made the default."""
    lt = env.mgn.get_launch_configuration(sourceServerID=server_id)["ec2LaunchTemplateID"]
    env.mgn.update_launch_configuration(sourceServerID=server_id, targetInstanceTypeRightSizingMethod="NONE")
    env.ec2.create_launch_template_version(
        LaunchTemplateId=lt, SourceVersion="$Default",
        LaunchTemplateData={"InstanceType": "t3.micro",
                            "NetworkInterfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": True}]})
    env.ec2.modify_launch_template(LaunchTemplateId=lt, DefaultVersion="2")
