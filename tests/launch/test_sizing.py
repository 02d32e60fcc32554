"""Instance type choice: BASIC right-sizing overrides the launch template, NONE uses it."""

from __future__ import annotations

from typing import Any

from rehost.errors import NotFound
from rehost.launch.sizing import instance_type_for, make_sizer, recommended_instance_type

TWO_CORES_2G = {"cpus": [{"cores": 2}], "ramBytes": 2 * 1024**3}


def _server(method: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"sourceServerID": "s-0123456789abcdef0", "sourceProperties": props or {},
            "_launchConfiguration": {"targetInstanceTypeRightSizingMethod": method,
                                     "ec2LaunchTemplateID": "lt-0123456789abcdef0"}}


def test_recommendation_is_never_burstable_and_fits_the_source() -> None:
    assert recommended_instance_type(TWO_CORES_2G) == "c5.large"
    assert recommended_instance_type({"cpus": [{"cores": 4}], "ramBytes": 30 * 1024**3}) == "r5.xlarge"
    assert recommended_instance_type({"cpus": [{"cores": 2}]}) is None  # no RAM reported yet


def test_basic_overrides_the_template_and_none_uses_it() -> None:
    template = {"InstanceType": "t3.micro"}
    assert instance_type_for(_server("BASIC", {**TWO_CORES_2G, "recommendedInstanceType": "m5.large"}), template) == "m5.large"
    assert instance_type_for(_server("BASIC", TWO_CORES_2G), template) == "c5.large"  # computed when not recorded
    assert instance_type_for(_server("NONE", {**TWO_CORES_2G, "recommendedInstanceType": "m5.large"}), template) == "t3.micro"
    assert instance_type_for(_server("BASIC"), template) == "t3.micro"  # nothing to right-size from
    assert instance_type_for(_server("NONE"), None) == "t3.small"


def test_sizer_gives_the_catalog_size_and_survives_a_missing_template() -> None:
    def missing(template_id: str) -> dict[str, Any]:
        raise NotFound(template_id)

    assert make_sizer(lambda t: {"InstanceType": "t3.micro"})(_server("NONE")) == ("t3.micro", 2, 1024)
    assert make_sizer(missing)(_server("BASIC", TWO_CORES_2G)) == ("c5.large", 2, 4096)
    assert make_sizer(missing)(_server("NONE")) == ("t3.small", 2, 2048)
