"""Plugs the launch half into a `rehost.controlplane.ControlPlane`: one call, made by the composition root."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from rehost.controlplane import ControlPlane


def attach_launch(cp: ControlPlane) -> Callable[[Request], Awaitable[Response]]:
    """Give ``cp`` its EC2 side and return the EC2 API's ``root_post`` handler for `build_app`.

    Sets ``cp.target`` (the target driver on ``D/instances``), ``cp.ec2`` (`Ec2Service`), the MGN hook that
    gives each new source server its own launch template, and the job runner's launcher (with the boot
    timeout), instance sizer and converter (snapshot export + conversion).
    """
    from rehost.api.ec2.handler import Ec2Api
    from rehost.conversion import SnapshotConverter
    from rehost.launch.launcher import TargetLauncher
    from rehost.launch.service import Ec2Service
    from rehost.launch.sizing import make_sizer
    from rehost.targets.qemu import QemuTarget

    instances_dir = cp.settings.data_dir / "instances"
    target = QemuTarget(instances_dir, accel=cp.settings.accel)
    ec2 = Ec2Service(cp.store, cp.account, target, instances_dir)
    cp.target = target  # type: ignore[attr-defined]
    cp.ec2 = ec2  # type: ignore[attr-defined]
    cp.mgn.hooks.create_ec2_launch_template = ec2.create_launch_template_for_server
    cp.runner.launcher = TargetLauncher(ec2)
    cp.runner.boot_timeout = cp.settings.launch_boot_timeout
    cp.runner.instance_sizer = make_sizer(ec2.default_version_data)
    if cp.runner.converter is None:
        cp.runner.converter = SnapshotConverter(cp.settings.data_dir)
    return Ec2Api(ec2, cp.authorizer)
