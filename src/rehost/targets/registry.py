"""Target URLs and the drivers they name: the one place a target's driver is chosen.

A target is named by a URL in libvirt's own syntax, so an operator can copy it from ``virsh -c``:

- ``qemu:///local``: rehost's own QEMU processes on this host (`rehost.targets.qemu`), under ``D/instances``;
- ``qemu:///system``, ``qemu:///session``, ``qemu+ssh://user@host/system``, ``qemu+unix:///system?socket=
  /run/x/libvirt-sock``, ``qemu+tcp://``, ``qemu+tls://``: a libvirt daemon (`rehost.targets.libvirt`),
  local or remote; its records (and a terminated instance's console output) live under
  ``D/targets/<name>``.

The next drivers (OpenStack, Proxmox VE, EC2) add a scheme here and a module beside these two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from rehost.errors import InvalidInput
from rehost.targets.base import TargetDriver

LOCAL_QEMU = "qemu:///local"
_LIBVIRT_SCHEMES = ("qemu", "qemu+ssh", "qemu+unix", "qemu+tcp", "qemu+tls", "qemu+libssh", "qemu+libssh2")
_REMOTE = ("qemu+ssh", "qemu+tcp", "qemu+tls", "qemu+libssh", "qemu+libssh2")


@dataclass(frozen=True)
class TargetURL:
    """A parsed target URL: ``kind`` is "qemu" (rehost's own QEMU) or "libvirt"; ``host`` is "" for this host."""

    url: str
    kind: str
    host: str


def parse_target_url(url: str) -> TargetURL:
    """Parse ``url``; anything else than the forms above is an `InvalidInput` saying what is expected."""
    expect = ("expected qemu:///local, or a libvirt URL such as qemu:///system, qemu+ssh://host/system or "
              "qemu+unix:///system?socket=/path")
    if not isinstance(url, str) or not url or any(c.isspace() for c in url):
        raise InvalidInput(f"target URL {url!r} is not valid: {expect}")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  (a port that is no number raises ValueError)
    except ValueError:
        raise InvalidInput(f"target URL {url!r} is not valid: {expect}") from None
    if parts.scheme not in _LIBVIRT_SCHEMES or parts.fragment:
        raise InvalidInput(f"target URL {url!r} is not valid: {expect}")
    if parts.path == "/local":
        if parts.scheme != "qemu" or parts.netloc or parts.query:
            raise InvalidInput(f"target URL {url!r} is not valid: /local is rehost's own QEMU on this host, "
                               f"written {LOCAL_QEMU}")
        return TargetURL(url, "qemu", "")
    if parts.path not in ("/system", "/session"):
        raise InvalidInput(f"target URL {url!r} is not valid: the path must be /system or /session (or "
                           f"{LOCAL_QEMU}); {expect}")
    if parts.scheme in _REMOTE and not host:
        raise InvalidInput(f"target URL {url!r} is not valid: {parts.scheme} needs a host, as in "
                           f"{parts.scheme}://host{parts.path}")
    if parts.scheme in ("qemu", "qemu+unix") and parts.netloc:
        raise InvalidInput(f"target URL {url!r} is not valid: {parts.scheme} reaches this host only; "
                           f"a remote host is qemu+ssh://{parts.netloc}{parts.path}")
    query = parse_qs(parts.query, keep_blank_values=True)
    for socket in query.get("socket", []):
        if not socket.startswith("/"):
            raise InvalidInput(f"target URL {url!r} is not valid: socket= must be an absolute path")
    return TargetURL(url, "libvirt", host)


def open_driver(url: str, *, name: str, data_dir: Path, accel: str = "auto", network: str = "",
                pool: str = "") -> TargetDriver:
    """The driver of target ``name`` at ``url``. Opening connects to nothing: a libvirt driver connects on
    its first call, so an unreachable host fails that call (a launch job, with the reason), not start-up."""
    parsed = parse_target_url(url)
    if parsed.kind == "qemu":
        from rehost.targets.qemu import QemuTarget

        return QemuTarget(data_dir / "instances", accel=accel)
    from rehost.targets.libvirt import LibvirtTarget

    return LibvirtTarget(url, data_dir / "targets" / name, network=network or "default", pool=pool or "default")
