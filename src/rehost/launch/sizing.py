"""Which instance type a launch uses: MGN's right-sizing (BASIC) or the launch template's type (NONE).

MGN's rule (mgn-reference.md §5.2, hands-on Step 5): with ``targetInstanceTypeRightSizingMethod`` BASIC the
recommended type (``sourceProperties.recommendedInstanceType``, from the source's CPUs and RAM) overrides the
launch template; with NONE the template's default version decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rehost import instancetypes
from rehost.errors import NotFound
from rehost.launch import templates as tpl


def recommended_instance_type(source_properties: Mapping[str, Any]) -> str | None:
    """BASIC right-sizing of a source (its ``cpus`` and ``ramBytes``); None until the source reported RAM."""
    if not source_properties.get("ramBytes"):
        return None
    return instancetypes.right_size_source(source_properties).name


def instance_type_for(server: Mapping[str, Any], launch_template_data: Mapping[str, Any] | None) -> str:
    """The type a launch of ``server`` (an MGN source server document) uses, given its launch template's
    default version data. BASIC: the recommendation (computed now if the server has none recorded);
    NONE, or BASIC without a usable recommendation: the template's type, else t3.small."""
    config = server.get("_launchConfiguration") or {}
    template_type = (launch_template_data or {}).get("InstanceType") or tpl.DEFAULT_INSTANCE_TYPE
    if config.get("targetInstanceTypeRightSizingMethod", "BASIC") == "BASIC":
        props = server.get("sourceProperties") or {}
        recommended = props.get("recommendedInstanceType") or recommended_instance_type(props)
        if recommended in instancetypes.CATALOG:
            return str(recommended)
    return str(template_type)


def make_sizer(default_version_data: Callable[[str], dict[str, Any]]) -> Callable[[Mapping[str, Any]], tuple[str, int, int]]:
    """The job runner's ``instance_sizer(server) -> (type, vcpus, memory_mib)`` over a function giving a
    launch template's default version data (`Ec2Service.default_version_data`)."""

    def size(server: Mapping[str, Any]) -> tuple[str, int, int]:
        template_id = (server.get("_launchConfiguration") or {}).get("ec2LaunchTemplateID")
        data: dict[str, Any] | None = None
        if template_id:
            try:
                data = default_version_data(template_id)
            except NotFound:
                data = None  # a server registered before templates existed: fall back to the defaults
        itype = instancetypes.get(instance_type_for(server, data))
        return itype.name, itype.vcpus, itype.memory_mib

    return size
