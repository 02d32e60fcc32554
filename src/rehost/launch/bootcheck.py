"""Has a launched guest booted? A launch job ends LAUNCHED only once it has (MGN's launch status).

A guest counts as booted when it reached user space, seen by either signal:

- its serial console shows a getty login prompt (``<host> login:``) or systemd reaching the multi-user
  (or graphical) target; conversion puts ``console=ttyS0`` on the kernel command line, so both appear;
- one of its ingress ports answers: bytes come back over the port's ``hostfwd``. A TCP connect alone
  proves nothing, since QEMU's user-mode network accepts on the host side before the guest is asked;
  SSH greets first, and any other service is sent an HTTP ``HEAD`` and must reply.

An emergency shell, a kernel panic, a boot loader stuck at its prompt or firmware that finds nothing to
boot show neither, and the launch fails after the bound with the console's last lines.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Mapping

from rehost.jobs.interfaces import BootResult
from rehost.targets.base import InstanceState, TargetDriver

#: Console lines put in a failed launch's job log.
CONSOLE_TAIL_LINES = 20

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]")
_SIGNALS = (
    ("login prompt", re.compile(r"^\S+ login: ?$", re.M)),
    ("systemd reached the multi-user target",
     re.compile(r"Reached target\s+(?:multi-user\.target|Multi-User System|graphical\.target|Graphical Interface)")),
)


def clean_console(text: str) -> str:
    """The console without terminal escapes and carriage returns."""
    return _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")


def console_signal(text: str) -> str | None:
    """The user-space boot signal the console shows, or None."""
    clean = clean_console(text)
    for name, pattern in _SIGNALS:
        if pattern.search(clean):
            return name
    return None


def console_tail(text: str, lines: int = CONSOLE_TAIL_LINES) -> tuple[str, ...]:
    kept = [line.rstrip() for line in clean_console(text).split("\n") if line.strip()]
    return tuple(kept[-lines:])


def port_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a service behind ``host:port`` sends bytes (greeting, or a reply to an HTTP HEAD)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(0.5)
            try:
                if s.recv(1):
                    return True
            except TimeoutError:
                pass
            s.settimeout(timeout)
            s.sendall(b"HEAD / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            return bool(s.recv(1))
    except OSError:
        return False


def wait_until_booted(target: TargetDriver, instance_id: str, timeout: float, *, poll: float = 1.0,
                      host: str = "127.0.0.1", clock: Callable[[], float] = time.monotonic) -> BootResult:
    """Watch ``instance_id`` until it reaches user space, dies, or ``timeout`` seconds pass."""
    started = clock()
    while True:
        inst = target.describe(instance_id)
        console = target.console_output(instance_id)
        elapsed = clock() - started
        if inst.state not in (InstanceState.PENDING, InstanceState.RUNNING):
            why = f"the instance is {inst.state.value}" + (f" ({inst.state_reason})" if inst.state_reason else "")
            return BootResult(False, f"The guest did not boot: {why}", elapsed, console_tail(console))
        signal = console_signal(console) or _answering_port(host, inst.port_map)
        if signal:
            return BootResult(True, signal, elapsed)
        if elapsed >= timeout:
            return BootResult(False, f"The guest did not reach user space within {timeout:g} s (no login prompt, "
                              "no multi-user target on its console, no ingress port answering)", elapsed,
                              console_tail(console))
        time.sleep(poll)


def _answering_port(host: str, port_map: Mapping[int, int]) -> str | None:
    for guest, local in sorted(port_map.items()):
        if port_answers(host, local):
            return f"port {guest} answers"
    return None
