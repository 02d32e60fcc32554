"""The one-file installer against a real `rehost server` (control plane + replication server processes):
install, register, replicate an image file until the staging volume is byte-identical, follow later
writes, and the user's mistakes end in one line and a non-zero exit with nothing registered."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import RunningServer, cli_json, free_port, processes_with, rehost_cli
from rehost.agent.bundle import build_installer, installer_bytes
from rehost.agent.control import AgentApiClient
from rehost.agent.service import stop_background
from rehost.agent.sigv4 import Credentials
from rehost.replication.staging import disk_key

from .conftest import MiB, make_image, sha_file

PY = "/usr/bin/python3"


@pytest.fixture(scope="module")
def installer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_installer(tmp_path_factory.mktemp("bundle") / "rehost-replication-installer-init")


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[RunningServer]:
    data = tmp_path / "data"
    data.mkdir()
    srv = RunningServer(data, free_port(), extra_args=("--replication-port", str(free_port()), "--max-active-source-servers", "2"))
    srv.start()
    try:
        srv.client().initialize_service()
        yield srv
    finally:
        srv.stop()


def run_installer(installer: Path, *args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-I", str(installer), *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def flags(cp: RunningServer, key: tuple[str, str], *extra: str) -> list[str]:
    return ["--endpoint", cp.endpoint, "--region", cp.region, "--aws-access-key-id", key[0],
            "--aws-secret-access-key", key[1], *extra]


def wait_for(predicate: Any, timeout: float = 120, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def staging_matches(cp: RunningServer, sid: str, image: Path, device_name: str = "") -> bool:
    """The staging volume of `device_name` (default: the image's path) holds exactly `image`'s bytes."""
    staging = cp.data_dir / "staging" / sid / f"{disk_key(device_name or str(image))}.img"
    return staging.exists() and sha_file(staging) == sha_file(image)

def read_install(proc: subprocess.Popen[str], log: Path | None = None) -> tuple[str, str]:
    """Read a foreground installer's transcript up to its success line; return (source server ID, text)."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if "successfully installed" in line:
            break
    text = "\n".join(lines)
    m = re.search(r"source server ID: (s-[0-9a-f]{17})\.", text)
    assert m, text + (log.read_text() if log is not None and log.exists() else "")
    return m.group(1), text



def test_foreground_agent_replicates_and_follows_writes(installer: Path, control_plane: RunningServer, tmp_path: Path) -> None:
    key = control_plane.access_key()
    image = make_image(tmp_path / "disk.img", 24 * MiB, [(0, 2 * MiB), (9 * MiB, 3 * MiB)])
    cmd = [PY, "-I", str(installer), *flags(control_plane, key, "--no-prompt", "--devices", str(image),
                                            "--state-dir", str(tmp_path / "state"), "--foreground")]
    agent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(tmp_path / "agent.log", "wb"), text=True)
    try:
        sid_s, text = read_install(agent)
        assert "You now have 1 active source server out of a total quota of 2." in text
        wait_for(lambda: staging_matches(control_plane, sid_s, image), what="initial sync")
        mgn = control_plane.client(key)

        def synced() -> dict[str, Any] | None:
            server = mgn.describe_source_servers(filters={"sourceServerIDs": [sid_s]})["items"][0]
            disks = server.get("dataReplicationInfo", {}).get("replicatedDisks", [])
            done = disks and all(d["replicatedStorageBytes"] == d["totalStorageBytes"] for d in disks)
            return server if done else None

        server = wait_for(synced, what="replicatedStorageBytes reported")
        props = server["sourceProperties"]
        assert props["disks"] == [{"deviceName": str(image), "bytes": 24 * MiB}]
        assert props["cpus"] and props["ramBytes"] > 0 and props["os"]["fullString"]
        # A write on the source reaches the staging volume (image files: by the periodic rescan).
        with open(image, "r+b") as f:
            f.seek(17 * MiB + 12345)
            f.write(os.urandom(70000))
        wait_for(lambda: staging_matches(control_plane, sid_s, image), what="the new write")
        # The agent took the first snapshot after the initial sync: the server is ready for testing.
        ready = wait_for(lambda: mgn.describe_source_servers(filters={"sourceServerIDs": [sid_s]})["items"][0]
                         ["lifeCycle"]["state"] == "READY_FOR_TEST", what="READY_FOR_TEST")
        assert ready
        # A snapshot requested through the control plane is taken by the agent in-stream and holds the
        # source's bytes as of the request.
        with open(image, "r+b") as f:
            f.seek(3 * MiB)
            f.write(os.urandom(5000))
        snap = rehost_cli("snapshot", "create", sid_s, "--sync", data_dir=control_plane.data_dir).stdout.strip()
        exported = tmp_path / "export.img"
        rehost_cli("snapshot", "export", sid_s, "--disk", str(image), "--snapshot", snap.split()[-1],
                   "--output", str(exported), data_dir=control_plane.data_dir)
        assert sha_file(exported) == sha_file(image)
    finally:
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(timeout=60)
    assert rc == 0, (tmp_path / "agent.log").read_text()[-3000:]


def test_prompts_then_reinstall_continues_the_same_server(control_plane: RunningServer, tmp_path: Path) -> None:
    # The user downloads the installer from the control plane, unauthenticated, as with wget.
    installer = tmp_path / "rehost-replication-installer-init"
    with urllib.request.urlopen(f"{control_plane.endpoint}/installer/linux/rehost-replication-installer-init") as resp:
        installer.write_bytes(resp.read())
    assert installer.read_bytes() == installer_bytes()
    key = control_plane.access_key()
    image = make_image(tmp_path / "disk.img", 4 * MiB, [(0, MiB)])
    state = str(tmp_path / "state")
    try:
        first = run_installer(installer, "--endpoint", control_plane.endpoint, "--state-dir", state, "--no-replication",
                              stdin=f"{control_plane.region}\n{key[0]}\n{key[1]}\n{image}\n")
        assert first.returncode == 0, first.stderr
        out = first.stdout
        assert "The installation of the rehost Replication Agent has started." in out
        assert "AWS Region Name: AWS Access Key ID: AWS Secret Access Key: " in out
        assert "Choose the disks you want to replicate. Your disks are: " in out
        assert "To replicate all disks, press Enter: " in out
        assert f"Identified volume for replication: {image} of size 4 MiB" in out
        assert "All volumes for replication were successfully identified." in out
        assert "Syncing the source server with the rehost console... Finished." in out
        assert out.rstrip().endswith("The rehost Replication Agent was successfully installed.")
        sid = re.search(r"source server ID: (s-[0-9a-f]{17})\.", out)
        assert sid
        assert os.stat(os.path.join(state, "credentials.json")).st_mode & 0o777 == 0o600
        again = run_installer(installer, *flags(control_plane, key, "--no-prompt", "--devices", str(image),
                                                 "--state-dir", state, "--no-replication"))
        assert again.returncode == 0, again.stderr
        assert f"source server ID: {sid.group(1)}." in again.stdout
        assert "You now have 1 active source server out of" in again.stdout
    finally:
        stop_background(state)


def _servers(cp: RunningServer, key: tuple[str, str]) -> list[dict[str, Any]]:
    return cp.client(key).describe_source_servers(filters={})["items"]


def _one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("rehost-replication-installer-init: error: ") and fragment in lines[0], lines


def test_wrong_credentials(installer: Path, control_plane: RunningServer, tmp_path: Path) -> None:
    key = control_plane.access_key()
    image = make_image(tmp_path / "disk.img", MiB, [])
    proc = run_installer(installer, *flags(control_plane, (key[0], "not-the-secret"), "--no-prompt",
                                           "--devices", str(image), "--state-dir", str(tmp_path / "st")))
    _one_line_error(proc, "signature")
    assert not (tmp_path / "st").exists()
    unknown = run_installer(installer, *flags(control_plane, ("AKIAUNKNOWNUNKNOWN00", "x"), "--no-prompt",
                                              "--devices", str(image), "--state-dir", str(tmp_path / "st")))
    _one_line_error(unknown, "security token")
    assert _servers(control_plane, key) == []


def test_unreachable_endpoint_and_unknown_device(installer: Path, tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", MiB, [])
    port = free_port()
    proc = run_installer(installer, "--endpoint", f"http://127.0.0.1:{port}", "--region", "us-east-1",
                         "--aws-access-key-id", "AKIAEXAMPLE", "--aws-secret-access-key", "x", "--no-prompt",
                         "--devices", str(image), "--state-dir", str(tmp_path / "st"))
    _one_line_error(proc, f"Cannot reach the rehost endpoint http://127.0.0.1:{port}")
    assert not (tmp_path / "st").exists()
    proc = run_installer(installer, "--endpoint", f"http://127.0.0.1:{port}", "--region", "us-east-1",
                         "--aws-access-key-id", "AKIAEXAMPLE", "--aws-secret-access-key", "x", "--no-prompt",
                         "--devices", str(tmp_path / "nope.img"), "--state-dir", str(tmp_path / "st"))
    _one_line_error(proc, "Unknown device")
    missing = run_installer(installer, "--no-prompt", "--devices", str(image), "--endpoint", "http://127.0.0.1:1")
    _one_line_error(missing, "--no-prompt")


def test_quota_reached(installer: Path, control_plane: RunningServer, tmp_path: Path) -> None:
    key = control_plane.access_key()
    api = AgentApiClient(control_plane.endpoint, control_plane.region, Credentials(*key))
    for name in ("other-1", "other-2"):
        api.register_agent({"hostname": name, "userProvidedID": name}, {}, [{"deviceName": "/dev/sda", "bytes": MiB, "isBoot": True}],
                           no_replication=True)
    image = make_image(tmp_path / "disk.img", MiB, [])
    proc = run_installer(installer, *flags(control_plane, key, "--no-prompt", "--devices", str(image),
                                           "--state-dir", str(tmp_path / "st"), "--user-provided-id", "third"))
    _one_line_error(proc, "")
    assert proc.returncode == 5
    assert len(_servers(control_plane, key)) == 2


def replication_server_processes(data_dir: Path) -> dict[str, int]:
    """Running `rehost replication-server` processes of ``data_dir`` (found by their --data-dir): {rs-id: pid}."""
    return {args[args.index(b"--id") + 1].decode(): pid
            for pid, args in processes_with("replication-server", str(data_dir)).items()
            if b"replication-server" in args and str(data_dir).encode() in args and b"--id" in args}


@pytest.mark.slow
def test_agent_survives_replication_server_crash_and_pause(installer: Path, control_plane: RunningServer, tmp_path: Path) -> None:
    key = control_plane.access_key()
    image = make_image(tmp_path / "disk.img", 8 * MiB, [(0, 2 * MiB)])
    cmd = [PY, "-I", str(installer), *flags(control_plane, key, "--no-prompt", "--devices", str(image),
                                            "--state-dir", str(tmp_path / "state"), "--foreground")]
    agent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(tmp_path / "agent.log", "wb"), text=True)
    try:
        sid, _ = read_install(agent)
        wait_for(lambda: staging_matches(control_plane, sid, image), what="initial sync")
        pids = list(replication_server_processes(control_plane.data_dir).values())
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        with open(image, "r+b") as f:
            f.seek(6 * MiB)
            f.write(os.urandom(100000))
        # The control plane restarts the replication server; the agent reconnects and catches up.
        wait_for(lambda: staging_matches(control_plane, sid, image), what="catch-up after the server crash")
        mgn = control_plane.client(key)
        mgn.pause_replication(sourceServerID=sid)
        state = lambda: mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0][  # noqa: E731
            "dataReplicationInfo"]["dataReplicationState"]
        assert state() == "PAUSED"
        mgn.resume_replication(sourceServerID=sid)
        with open(image, "r+b") as f:
            f.seek(MiB)
            f.write(os.urandom(4096))
        wait_for(lambda: staging_matches(control_plane, sid, image), what="catch-up after resume")
        wait_for(lambda: state() in ("CONTINUOUS", "RESCAN"), what="replicating again")
    finally:
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(timeout=60)
    assert rc == 0, (tmp_path / "agent.log").read_text()[-3000:]


def test_temporary_credentials_ask_for_the_session_token(installer: Path, control_plane: RunningServer, tmp_path: Path) -> None:
    control_plane.access_key()  # makes sure the admin user has a key before asking for a session
    creds = cli_json("iam", "get-session-token", "admin", data_dir=control_plane.data_dir)["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    image = make_image(tmp_path / "disk.img", MiB, [])
    state = str(tmp_path / "state")
    try:
        proc = run_installer(installer, "--endpoint", control_plane.endpoint, "--devices", str(image), "--state-dir", state,
                             "--no-replication",
                             stdin=f"{control_plane.region}\n{creds['AccessKeyId']}\n{creds['SecretAccessKey']}\n"
                                   f"{creds['SessionToken']}\n")
        assert proc.returncode == 0, proc.stderr
        assert "AWS Secret Access Key: AWS Session Token: " in proc.stdout
        assert re.search(r"source server ID: s-[0-9a-f]{17}\.", proc.stdout)
    finally:
        stop_background(state)


def test_installation_policy_is_enough_and_the_agent_outlives_the_installer_key(
        installer: Path, control_plane: RunningServer, tmp_path: Path) -> None:
    """Installer credentials allowed only MGN's installation calls install the agent, which then signs with
    a key of its own: deleting the installer's user afterwards does not stop replication."""
    cp = control_plane
    cli_json("iam", "create-user", "installer", data_dir=cp.data_dir)
    rehost_cli("iam", "attach-user-policy", "installer", "AWSApplicationMigrationAgentInstallationPolicy",
               data_dir=cp.data_dir)
    key = cp.access_key("installer")
    image = make_image(tmp_path / "disk.img", 8 * MiB, [(0, 2 * MiB)])
    state = tmp_path / "state"
    agent = subprocess.Popen([PY, "-I", str(installer), *flags(cp, key, "--no-prompt", "--devices", str(image),
                                                               "--state-dir", str(state), "--foreground")],
                             stdout=subprocess.PIPE, stderr=open(tmp_path / "agent.log", "wb"), text=True)
    try:
        sid, _ = read_install(agent)
        saved = json.loads((state / "credentials.json").read_text())
        assert saved["accessKeyId"] != key[0]
        assert (state / "credentials.json").stat().st_mode & 0o777 == 0o600
        mgn = cp.client(cp.access_key())
        wait_for(lambda: mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]
                 ["lifeCycle"]["state"] == "READY_FOR_TEST", what="READY_FOR_TEST")
        rehost_cli("iam", "delete-user", "installer", data_dir=cp.data_dir)
        with open(image, "r+b") as f:
            f.seek(5 * MiB)
            f.write(os.urandom(8192))
        wait_for(lambda: staging_matches(cp, sid, image), what="the write after the installer's key is gone")
        seen = mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]
        info = seen["dataReplicationInfo"]
        assert info["dataReplicationState"] in ("CONTINUOUS", "RESCAN") and "dataReplicationError" not in info
    finally:
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(timeout=60)
    assert rc == 0, (tmp_path / "agent.log").read_text()[-3000:]
