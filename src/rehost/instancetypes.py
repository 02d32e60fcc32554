"""EC2 instance types (AWS names, vCPUs, memory, on-demand prices) and MGN's BASIC right-sizing.

Prices are AWS's published on-demand Linux prices in us-east-1 (USD per hour). The catalog sizes the VMs
a target launches (vCPUs and memory) and lets the console compare costs as the hands-on does
(t3.micro USD 0.0104/h against the recommended c5.large USD 0.085/h).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rehost.errors import InvalidInput


@dataclass(frozen=True)
class InstanceType:
    """One instance type: ``name`` like "c5.large", its family ("c5"), size, vCPUs, memory and price."""

    name: str
    vcpus: int
    memory_mib: int
    hourly_usd: float

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def size(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024


def _t(name: str, vcpus: int, gib: float, usd: float) -> InstanceType:
    return InstanceType(name, vcpus, int(gib * 1024), usd)


CATALOG: dict[str, InstanceType] = {t.name: t for t in (
    _t("t2.micro", 1, 1, 0.0116), _t("t2.small", 1, 2, 0.023), _t("t2.medium", 2, 4, 0.0464),
    _t("t2.large", 2, 8, 0.0928), _t("t2.xlarge", 4, 16, 0.1856), _t("t2.2xlarge", 8, 32, 0.3712),
    _t("t3.nano", 2, 0.5, 0.0052), _t("t3.micro", 2, 1, 0.0104), _t("t3.small", 2, 2, 0.0208),
    _t("t3.medium", 2, 4, 0.0416), _t("t3.large", 2, 8, 0.0832), _t("t3.xlarge", 4, 16, 0.1664),
    _t("t3.2xlarge", 8, 32, 0.3328),
    _t("m5.large", 2, 8, 0.096), _t("m5.xlarge", 4, 16, 0.192), _t("m5.2xlarge", 8, 32, 0.384),
    _t("m5.4xlarge", 16, 64, 0.768), _t("m5.8xlarge", 32, 128, 1.536),
    _t("c5.large", 2, 4, 0.085), _t("c5.xlarge", 4, 8, 0.17), _t("c5.2xlarge", 8, 16, 0.34),
    _t("c5.4xlarge", 16, 32, 0.68), _t("c5.9xlarge", 36, 72, 1.53),
    _t("r5.large", 2, 16, 0.126), _t("r5.xlarge", 4, 32, 0.252), _t("r5.2xlarge", 8, 64, 0.504),
    _t("r5.4xlarge", 16, 128, 1.008), _t("r5.8xlarge", 32, 256, 2.016),
)}

#: The families BASIC right-sizing chooses from: MGN never recommends burstable (T) types.
RIGHT_SIZING_FAMILIES = ("c5", "m5", "r5")


def get(name: str) -> InstanceType:
    """Return the instance type called ``name``; raise `InvalidInput` (EC2's "invalid value") if unknown."""
    try:
        return CATALOG[name]
    except KeyError:
        raise InvalidInput(f"Invalid value '{name}' for InstanceType.") from None


def right_size(vcpus: int, memory_mib: int) -> InstanceType:
    """MGN's BASIC right-sizing: the cheapest C5/M5/R5 type with at least ``vcpus`` and ``memory_mib``.

    When nothing in those families is big enough the largest is returned (MGN caps the same way).
    """
    candidates = [t for t in CATALOG.values() if t.family in RIGHT_SIZING_FAMILIES]
    fitting = [t for t in candidates if t.vcpus >= vcpus and t.memory_mib >= memory_mib]
    if not fitting:
        return max(candidates, key=lambda t: (t.vcpus, t.memory_mib))
    return min(fitting, key=lambda t: (t.hourly_usd, t.vcpus, t.memory_mib))


def right_size_source(source_properties: Mapping[str, Any]) -> InstanceType:
    """Right-size from MGN's ``SourceProperties`` shape (``cpus[].cores``, ``ramBytes``)."""
    cpus = source_properties.get("cpus") or []
    vcpus = sum(int(c.get("cores", 1)) for c in cpus) or 1
    memory_mib = -(-int(source_properties.get("ramBytes", 0)) // 2**20)
    return right_size(vcpus, memory_mib)
