"""Keeps the agent running after the installer exits.

With systemd (``/run/systemd/system`` exists) the agent becomes the ``rehost-replication`` service
(``systemctl status rehost-replication``), enabled at boot and restarted on failure; installing again
restarts it. Without systemd (containers, minimal systems) the agent is started as a detached background
process whose pid is kept in ``<state>/agent.pid``; installing again replaces that process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from rehost.errors import RehostError

UNIT_NAME = "rehost-replication.service"
UNIT_PATH = "/etc/systemd/system/" + UNIT_NAME


class ServiceError(RehostError):
    """The agent could not be installed as a service."""


def unit_text(python: str, agent_path: str, state_dir: str) -> str:
    return (
        "[Unit]\n"
        "Description=rehost Replication Agent\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart={python} {agent_path} agent --state-dir {state_dir}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "KillMode=mixed\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def _python() -> str:
    return sys.executable or "/usr/bin/python3"


def install_service(state_dir: str, agent_path: str) -> str:
    """Start the agent for `state_dir` in the background; returns how ("systemd" or "process")."""
    if os.path.isdir("/run/systemd/system"):
        try:
            with open(UNIT_PATH, "w") as f:
                f.write(unit_text(_python(), agent_path, state_dir))
            subprocess.run(["systemctl", "daemon-reload"], check=True, capture_output=True)
            subprocess.run(["systemctl", "enable", UNIT_NAME], check=True, capture_output=True)
            subprocess.run(["systemctl", "restart", UNIT_NAME], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            raise ServiceError(
                f"Cannot install the {UNIT_NAME} service: {exc} {detail.decode(errors='replace').strip()}"
            ) from exc
        return "systemd"
    stop_background(state_dir)
    log_path = os.path.join(state_dir, "agent.log")
    with open(log_path, "ab") as log, open(os.devnull, "rb") as null:
        proc = subprocess.Popen(
            [_python(), agent_path, "agent", "--state-dir", state_dir],
            stdin=null,
            stdout=log,
            stderr=log,
            start_new_session=True,  # survives the installer's terminal closing
            close_fds=True,
        )
    with open(os.path.join(state_dir, "agent.pid"), "w") as f:
        f.write(str(proc.pid))
    return "process"


def stop_background(state_dir: str, timeout: float = 10.0) -> bool:
    """Stop the background agent started for `state_dir`, if its pid still runs that agent."""
    pid_path = os.path.join(state_dir, "agent.pid")
    try:
        with open(pid_path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
    except OSError:
        cmdline = []
    # Only a process that is this state dir's agent: the pid may have been reused.
    if b"agent" not in cmdline or state_dir.encode() not in cmdline:
        os.unlink(pid_path)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        except ChildProcessError:
            pass
        time.sleep(0.1)
    os.unlink(pid_path)
    return True
