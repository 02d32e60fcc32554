"""Target URLs and the configured targets (real SQLite): what is accepted, what is refused and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from rehost.db.store import Store
from rehost.errors import Conflict, InvalidInput, NotFound
from rehost.launch.errors import Ec2InvalidInput, Ec2NotFound
from rehost.launch.placement import Targets
from rehost.launch.templates import DEFAULT_SUBNET
from rehost.targets.registry import open_driver, parse_target_url


@pytest.mark.parametrize("url, kind, host", [
    ("qemu:///local", "qemu", ""), ("qemu:///system", "libvirt", ""), ("qemu:///session", "libvirt", ""),
    ("qemu+ssh://root@kvm-01/system", "libvirt", "kvm-01"), ("qemu+unix:///system?socket=/run/x/sock", "libvirt", ""),
    ("qemu+tls://kvm-02:16514/system", "libvirt", "kvm-02")])
def test_target_urls(url: str, kind: str, host: str) -> None:
    parsed = parse_target_url(url)
    assert (parsed.kind, parsed.host) == (kind, host)


@pytest.mark.parametrize("url, why", [
    ("", "not valid"), ("http://kvm-01/system", "expected"), ("qemu+ssh:///system", "needs a host"),
    ("qemu://kvm-01/system", "reaches this host only"), ("qemu:///local?x=1", "/local is rehost's own"),
    ("qemu:///elsewhere", "/system or /session"), ("qemu+unix:///system?socket=rel/sock", "absolute"),
    ("qemu+tls://kvm:port/system", "not valid"), ("qemu:///system extra", "not valid")])
def test_bad_target_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        parse_target_url(url)


def test_targets_are_zones_and_their_networks_subnets(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'rehost.db'}")
    targets = Targets(store, "eu-west-1", lambda t: open_driver(t.url, name=t.name, data_dir=tmp_path, accel="tcg",
                                                                 network=t.network, pool=t.pool))
    try:
        assert [(t.name, t.zone, t.default) for t in targets.configured()] == [("local", "eu-west-1a", True)]
        assert targets.resolve("", "") == (targets.get("local"), "")
        assert targets.resolve(DEFAULT_SUBNET, "eu-west-1a")[0].name == "local"
        gone = targets.add("gone", "qemu+unix:///system?socket=/nonexistent/sock", network="br0", default=True)
        assert (gone.zone, gone.default, targets.default().name) == ("eu-west-1b", True, "gone")
        assert targets.default_subnet_id() == targets.subnet_id(gone, "br0") != DEFAULT_SUBNET
        # its configured network resolves without a connection; the zone shows why it is unavailable
        assert targets.resolve(targets.default_subnet_id(), "")[0].name == "gone"
        assert [why for t, why in targets.zones() if t.name == "gone"][0].startswith("cannot connect to")
        with pytest.raises(Ec2NotFound, match="unreachable targets: gone"):
            targets.resolve("subnet-0123456789abcdef0", "")
        with pytest.raises(Ec2InvalidInput, match="is in eu-west-1b, not eu-west-1a"):
            targets.resolve(targets.default_subnet_id(), "eu-west-1a")
        with pytest.raises(Ec2InvalidInput, match="Valid zones: eu-west-1a, eu-west-1b"):
            targets.resolve("", "eu-west-1q")
        for bad, error in ((("local", "qemu:///system"), Conflict), (("other", gone.url), Conflict),
                           (("Bad_Name", "qemu:///system"), InvalidInput),
                           (("q2", "qemu:///local"), Conflict)):
            with pytest.raises(error):
                targets.add(*bad)
        with pytest.raises(InvalidInput, match="--network and --pool are for libvirt"):
            targets.add("q3", "qemu:///local", pool="p")
        with pytest.raises(InvalidInput, match="built-in"):
            targets.remove("local")
        targets.set_default("local")
        targets.remove("gone")
        with pytest.raises(NotFound):
            targets.get("gone")
        assert [t.name for t in targets.configured()] == ["local"]
    finally:
        store.close()
