"""Test helpers: run a real `rehost server` process on loopback and talk to it with real clients."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

REHOST = [sys.executable, "-m", "rehost.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rehost_cli(*args: str, data_dir: Path, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*REHOST, *args, "--data-dir", str(data_dir)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"rehost {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def cli_json(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    return json.loads(rehost_cli(*args, data_dir=data_dir, env=env).stdout)


@dataclass
class RunningServer:
    data_dir: Path
    port: int
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    region: str = "us-east-1"
    tls: bool = False  # served with --tls: clients trust the data directory's CA

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_bundle(self) -> str | None:
        return str(self.data_dir / "tls" / "ca.pem") if self.tls else None

    def start(self) -> RunningServer:
        log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [*REHOST, "server", "--data-dir", str(self.data_dir), "--port", str(self.port),
             *(["--tls"] if self.tls else []), *self.extra_args],
            stdout=log, stderr=log, env={**os.environ, **self.env})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"rehost server exited with {self.proc.returncode}: "
                                     f"{(self.data_dir.parent / f'server-{self.port}.log').read_text()[-3000:]}")
            try:
                context = ssl.create_default_context(cafile=self.ca_bundle) if self.tls else None
                with urllib.request.urlopen(f"{self.endpoint}/healthz", timeout=1, context=context) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("rehost server did not come up within 60 s")

    def stop(self, *, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            # SIGTERM lets a pre-flight inspection in progress finish and unmount what it mounted (up to a
            # minute under TCG load) rather than leave loop devices and mounts behind.
            self.proc.wait(timeout=150)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def access_key(self, user: str = "admin") -> tuple[str, str]:
        out = cli_json("iam", "create-access-key", user, data_dir=self.data_dir, env=self.env)
        return out["AccessKey"]["AccessKeyId"], out["AccessKey"]["SecretAccessKey"]

    def client(self, key: tuple[str, str] | None = None, service: str = "mgn", session_token: str | None = None) -> Any:
        key = key or self.access_key()
        return boto3.client(
            service, endpoint_url=self.endpoint, region_name=self.region, aws_access_key_id=key[0],
            aws_secret_access_key=key[1], aws_session_token=session_token, verify=self.ca_bundle,
            config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=120))


def sha256_file(path: Path | str) -> str:
    """The hex sha256 of a file, read in 4 MiB pieces (images are larger than memory should hold)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 << 20):
            h.update(block)
    return h.hexdigest()


def processes_with(*words: str) -> dict[int, list[bytes]]:
    """Running processes whose command line contains every one of ``words`` (as whole arguments or
    within one, such as a path in a QEMU -drive option): {pid: arguments}."""
    found: dict[int, list[bytes]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if all(w.encode() in raw for w in words):
            found[int(entry)] = raw.split(b"\0")
    return found
