"""End to end on a real OS: the Debian source image, converted, launched by the Launcher from its Step 5
launch template, serves its site on the instance's public IP (root: conversion uses loop devices)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import LaunchEnv, size_and_launch, step5, wait_state

_fixtures = pytest.importorskip("images.fixtures")
minimal_image = _fixtures.minimal_image  # session fixture shared with the image suite


@pytest.mark.slow
@pytest.mark.root
def test_converted_image_serves_its_site_on_the_public_ip(launch_env: LaunchEnv, minimal_image: Path,  # noqa: F811
                                                          tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (conversion mounts the image through loop devices)")
    from rehost.conversion import convert
    from rehost.images.sourcevm import wait_http

    env = launch_env
    disk = convert(minimal_image, "/dev/sda", tmp_path / "conversion")
    server_id = env.agent.register("legacy-web-01")["sourceServerID"]
    step5(env, server_id)
    result, _ = size_and_launch(env, server_id, disk.path)
    assert result["publicIp"] == "127.0.0.1"

    body = wait_http(f"http://{result['publicIp']}:{result['ports'][80]}/", 300, expect=_fixtures.MARKER)
    assert _fixtures.MARKER in body
    inst = wait_state(env.ec2, result["instanceId"], "running")
    assert inst["PublicIpAddress"] == "127.0.0.1" and inst["InstanceType"] == "t3.micro"
    console = env.ec2.get_console_output(InstanceId=result["instanceId"])["Output"]
    assert "Linux version" in console

    env.ec2.terminate_instances(InstanceIds=[result["instanceId"]])
    assert wait_state(env.ec2, result["instanceId"], "terminated")["State"]["Name"] == "terminated"
