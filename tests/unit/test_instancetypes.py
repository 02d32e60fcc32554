"""The instance type catalog and MGN's BASIC right-sizing."""

from __future__ import annotations

import pytest

from rehost import instancetypes
from rehost.errors import InvalidInput


def test_catalog_has_the_hands_on_prices() -> None:
    micro = instancetypes.get("t3.micro")
    assert (micro.vcpus, micro.memory_mib, micro.hourly_usd) == (2, 1024, 0.0104)
    c5 = instancetypes.get("c5.large")
    assert (c5.vcpus, c5.memory_mib, c5.hourly_usd) == (2, 4096, 0.085)


@pytest.mark.parametrize("family", ["t3", "m5", "c5", "r5"])
def test_catalog_covers_the_families_up_to_4xlarge(family: str) -> None:
    sizes = {t.size for t in instancetypes.CATALOG.values() if t.family == family}
    assert {"large", "xlarge", "2xlarge"} <= sizes
    assert family == "t3" or "4xlarge" in sizes


def test_t3_micro_source_gets_c5_large() -> None:
    # A t3.micro reports a little under 1 GiB of RAM, as a real one does.
    props = {"cpus": [{"cores": 2, "modelName": "x"}], "ramBytes": 1_012_000_000}
    assert instancetypes.right_size_source(props).name == "c5.large"


def test_right_sizing_never_picks_burstable_types() -> None:
    for vcpus, mib in [(1, 256), (2, 2048), (4, 16384), (8, 32768), (16, 65536)]:
        chosen = instancetypes.right_size(vcpus, mib)
        assert chosen.family in ("c5", "m5", "r5")
        assert chosen.vcpus >= vcpus and chosen.memory_mib >= mib


def test_right_sizing_picks_cheapest_fit() -> None:
    assert instancetypes.right_size(2, 6000).name == "m5.large"  # c5.large has only 4 GiB
    assert instancetypes.right_size(2, 12000).name == "r5.large"  # 16 GiB for 0.126 beats m5.xlarge
    assert instancetypes.right_size(3, 4096).name == "c5.xlarge"


def test_unknown_type_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="t9.huge"):
        instancetypes.get("t9.huge")
