"""Choosing QEMU's accelerator: KVM only where it is proven to boot a guest, else TCG.

On this kind of machine ``/dev/kvm`` exists but a Linux guest hangs under it, so its presence proves
nothing. The probe boots a real Linux kernel with no root disk under KVM and waits for the kernel to get to
its end ("VFS: Unable to mount root fs" then a panic) on the serial console. The answer is cached in a
JSON file, so the cost (at most `PROBE_TIMEOUT` seconds) is paid once per data directory.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

from rehost.targets.qemuproc import QEMU

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 25.0
_BOOTED = ("Unable to mount root", "Kernel panic", "Run /init")


def kernel_boots(kernel: Path, accel: str = "kvm", timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Boot ``kernel`` under ``accel`` (no disk, no initrd); return (whether it ran to its end, why)."""
    if accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not usable"
    with tempfile.TemporaryDirectory(prefix="rehost-kvmprobe-") as tmp:
        serial = Path(tmp) / "serial.log"
        argv = [QEMU, "-accel", accel, "-machine", "pc", "-m", "256", "-nodefaults", "-display", "none",
                "-no-reboot", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
                "-serial", f"file:{serial}"]
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as exc:
            return False, f"cannot run QEMU: {exc}"
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                text = serial.read_text(errors="replace") if serial.exists() else ""
                if any(m in text for m in _BOOTED):
                    return True, f"a Linux kernel booted under {accel.upper()}"
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                    return False, f"QEMU ({accel}) exited early: {err[-300:]}"
                time.sleep(0.25)
            return False, f"a Linux kernel did not boot under {accel.upper()} within {timeout:.0f} s"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def choose_accelerator(requested: str, cache_file: Path, kernel: Path | None) -> str:
    """Return "kvm" or "tcg" for ``requested`` ("auto", "kvm", "tcg"), logging the choice and why.

    "auto" reuses the cached answer in ``cache_file`` or probes with ``kernel``; with no kernel to probe
    with it answers TCG without caching, so a later call with a kernel can still find KVM.
    """
    if requested in ("kvm", "tcg"):
        log.info("accelerator %s (configured)", requested)
        return requested
    try:
        cached = json.loads(cache_file.read_text())
        log.info("accelerator %s (cached probe: %s)", cached["accel"], cached["reason"])
        return str(cached["accel"])
    except (OSError, ValueError, KeyError):
        pass
    if kernel is None or not kernel.exists():
        log.info("accelerator tcg (no kernel to probe KVM with)")
        return "tcg"
    ok, reason = kernel_boots(kernel, "kvm")
    accel = "kvm" if ok else "tcg"
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"accel": accel, "reason": reason, "probed_at": time.time()}))
    tmp.replace(cache_file)
    log.info("accelerator %s (probe: %s)", accel, reason)
    return accel
