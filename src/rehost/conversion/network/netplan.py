"""netplan (Ubuntu 18.04+, Debian cloud images): ``/etc/netplan/*.yaml``, rendered to systemd-networkd or
NetworkManager at boot (so converting the YAML converts whichever renders it).

The entry holding the source's address (a gateway or default route, else static addresses, else a MAC
match, else DHCP) gets DHCP: for an ethernet, its key becomes eth0 and its ``match`` and ``set-name`` go;
for a bridge or bond, the bridge takes DHCP and its first member ethernet becomes eth0. References to the
renamed ethernet (bridge and bond ``interfaces``, VLAN ``link``) follow. The source network's addresses,
gateways, routes and nameserver addresses are dropped; search domains, the renderer and every other entry
stay. The YAML is rewritten (comments are lost; the original is kept beside it as ``*.yaml.rehost-source``,
which netplan does not read).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import yaml

from rehost.conversion.edits import rel
from rehost.conversion.network.base import TARGET_NIC, Change, ChangeFixer, read, write

NETPLAN_DIR = "etc/netplan"
_SOURCE_NETWORK = ("addresses", "gateway4", "gateway6", "routes")
_HOLDERS = ("bridges", "bonds")


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(read(path))
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, dict) and isinstance(doc.get("network"), dict) else {}


def _rank(conf: Any, name: str) -> int:
    """How surely this entry holds the source's address: 5 converted already, 4 gateway, 3 addresses,
    2 MAC match, 1 DHCP, 0 not at all."""
    if not isinstance(conf, dict):
        return 0
    if name == TARGET_NIC and conf.get("dhcp4") is True and not any(k in conf for k in ("match", *_SOURCE_NETWORK)):
        return 5
    if "gateway4" in conf or "gateway6" in conf or any(
            isinstance(r, dict) and r.get("to") in ("default", "0.0.0.0/0") for r in conf.get("routes") or []):
        return 4
    if conf.get("addresses"):
        return 3
    if isinstance(conf.get("match"), dict) and "macaddress" in conf["match"]:
        return 2
    return 1 if conf.get("dhcp4") else 0


def _to_dhcp(conf: dict[str, Any]) -> list[str]:
    """Give the entry DHCP without the source network's settings; return what it had of those."""
    before = conf.get("dhcp4", "unset")
    dropped = [k for k in _SOURCE_NETWORK if conf.pop(k, None) is not None]
    ns = conf.get("nameservers")
    if isinstance(ns, dict) and ns.pop("addresses", None) is not None:
        dropped.append("nameservers.addresses")
        if not ns:
            del conf["nameservers"]
    if conf.get("dhcp4") is not True:
        conf["dhcp4"] = True
        dropped.append(f"dhcp4: {str(before).lower()}")
    return dropped


def _rename(net: dict[str, Any], old: str) -> None:
    """Ethernet ``old`` becomes eth0 (no match, no set-name), and so do the references to it."""
    eths = net["ethernets"]
    conf = eths.pop(old)
    conf.pop("match", None)
    conf.pop("set-name", None)
    eths[TARGET_NIC] = conf
    for kind in (*_HOLDERS, "vlans"):
        for entry in (net.get(kind) or {}).values():
            if isinstance(entry, dict):
                if isinstance(entry.get("interfaces"), list):
                    entry["interfaces"] = [TARGET_NIC if i == old else i for i in entry["interfaces"]]
                if entry.get("link") == old:
                    entry["link"] = TARGET_NIC


class Netplan(ChangeFixer):
    name = "netplan"

    def _docs(self, root: Path) -> dict[Path, dict[str, Any]]:
        return {p: d for p in sorted((root / NETPLAN_DIR).glob("*.yaml")) if (d := _load(p))}

    def detect(self, root: Path) -> bool:
        return any(isinstance(d["network"].get(k), dict) and d["network"][k]
                   for d in self._docs(root).values() for k in ("ethernets", *_HOLDERS))

    def changes(self, root: Path) -> list[Change]:
        docs = self._docs(root)
        candidates = [(_rank(conf, name), kind, name) for d in docs.values()
                      for kind in ("ethernets", *_HOLDERS)
                      for name, conf in (d["network"].get(kind) or {}).items()]
        rank, kind, name = max(candidates, key=lambda c: c[0], default=(0, "", ""))
        if rank in (0, 5):
            return []
        eth = name if kind == "ethernets" else self._member(docs, kind, name)
        out = []
        for path, doc in docs.items():
            net = doc["network"]
            what = []
            entry = (net.get(kind) or {}).get(name)
            if isinstance(entry, dict) and (dropped := _to_dhcp(entry)):
                what.append(f"DHCP on {TARGET_NIC}: {kind}.{name}: dhcp4 (was: {', '.join(dropped)})")
            if eth and eth != TARGET_NIC and eth in (net.get("ethernets") or {}):
                _rename(net, eth)
                what.append(f"ethernets.{eth} -> {TARGET_NIC} (no MAC match, no set-name)")
            if what:
                text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
                out.append(Change(f"network: netplan: {rel(root, path)}: " + "; ".join(what),
                                  partial(write, path, text)))
        return out

    @staticmethod
    def _member(docs: dict[Path, dict[str, Any]], kind: str, name: str) -> str:
        for d in docs.values():
            entry = (d["network"].get(kind) or {}).get(name)
            if isinstance(entry, dict) and entry.get("interfaces"):
                return str(entry["interfaces"][0])
        return ""
