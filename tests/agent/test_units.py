"""Fast checks of the agent's parts: SigV4 signatures equal botocore's, the digest store survives a
restart and finds exactly the changed chunk, the one-file installer is deterministic, Python 3.8 syntax,
stdlib-only and runs under an isolated /usr/bin/python3, the throttle holds its rate in bytes."""

from __future__ import annotations

import ast
import datetime
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from rehost.agent.bundle import build_installer, installer_bytes
from rehost.agent.discovery import select_disks
from rehost.agent.installer import _tags
from rehost.agent.rescan import CHUNK_SIZE, UNKNOWN_DIGEST, ZERO_DIGEST, DigestStore, DiskReader, scan
from rehost.agent.sigv4 import Credentials, sign_request
from rehost.errors import InvalidInput

from .conftest import MiB, make_image


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEXAMPLETOKEN"])
def test_signature_equals_botocore(token: str | None) -> None:
    now = datetime.datetime(2026, 11, 24, 12, 30, 45, tzinfo=datetime.UTC)
    url = "http://127.0.0.1:8080/agent/RegisterAgentForMgn"
    body = b'{"hints":{"hostname":"web1"}}'
    ours = sign_request("POST", url, body, Credentials("AKIDEXAMPLE", "secret/key+x", token), "eu-west-3",
                        headers={"Content-Type": "application/json"}, now=now)
    request = AWSRequest(method="POST", url=url, data=body, headers={k: v for k, v in ours.items() if k != "Authorization"})
    signer = SigV4Auth(BotoCredentials("AKIDEXAMPLE", "secret/key+x", token), "mgn", "eu-west-3")
    request.context["timestamp"] = now.strftime("%Y%m%dT%H%M%SZ")
    # botocore signs the same headers we send: compare the signature itself.
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    expected = signer.signature(string_to_sign, request)
    assert ours["Authorization"].endswith("Signature=" + expected)
    assert ("X-Amz-Security-Token" in ours) == (token is not None)


def test_digest_store_survives_restart_and_finds_the_changed_chunk(tmp_path: Path) -> None:
    image = make_image(tmp_path / "d.img", 4 * MiB + 1000, [(0, MiB), (3 * MiB, MiB + 1000)])
    digests = str(tmp_path / "d.digests")
    store, reader = DigestStore(digests, image.stat().st_size), DiskReader(str(image))
    assert store.fresh and store.get(0) == UNKNOWN_DIGEST
    changed = list(scan(reader, store))
    assert len(changed) == store.chunks == 65  # a short tail chunk counts too
    for c in changed:
        store.set(c.index, c.digest)
    store.commit()
    assert sum(1 for c in changed if c.is_zero and c.data == b"") == 65 - 16 - 17
    store.close()
    reader.close()
    with open(image, "r+b") as f:
        f.seek(40 * CHUNK_SIZE + 100)
        f.write(b"x")
    store, reader = DigestStore(digests, image.stat().st_size), DiskReader(str(image))
    assert not store.fresh
    again = list(scan(reader, store))
    assert [c.index for c in again] == [40] and again[0].data[100:101] == b"x"
    store.close()
    reader.close()
    # A different disk size means a different disk: start over.
    assert DigestStore(digests, 8 * MiB).fresh


def test_zero_chunk_digest(tmp_path: Path) -> None:
    image = make_image(tmp_path / "z.img", MiB, [])
    store, reader = DigestStore(str(tmp_path / "z.digests"), MiB), DiskReader(str(image))
    assert all(c.digest == ZERO_DIGEST and c.data == b"" for c in scan(reader, store))


def test_bundle_is_deterministic_stdlib_and_py38(tmp_path: Path) -> None:
    assert installer_bytes() == installer_bytes()
    path = build_installer(tmp_path / "rehost-replication-installer-init")
    assert path.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert os.access(path, os.X_OK)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert "__main__.py" in names and "rehost/replication/protocol.py" in names
        assert not any(n.startswith(("rehost/api", "rehost/chunkstore")) for n in names)
        for name in names:
            ast.parse(zf.read(name), filename=name, feature_version=(3, 8))
        zf.extractall(tmp_path / "bundle")
    # No standard-library API newer than Python 3.8 either (str.removeprefix, zip(strict=), ...): vermin
    # knows when each appeared. It must flag a 3.9 call, or its silence would prove nothing.
    vermin = [str(Path(sys.executable).parent / "vermin"), "-t=3.8-", "--violations", "--no-tips", "-q"]
    (tmp_path / "py39.py").write_text("print('rehost'.removeprefix('re'))\n")
    assert subprocess.run([*vermin, str(tmp_path / "py39.py")], capture_output=True, timeout=120).returncode != 0
    proc = subprocess.run([*vermin, str(tmp_path / "bundle")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run(["/usr/bin/python3", "-I", str(path), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--region", "--aws-access-key-id", "--aws-secret-access-key", "--aws-session-token", "--endpoint",
                 "--no-prompt", "--devices", "--force-volumes", "--tags", "--user-provided-id", "--no-replication",
                 "--foreground"):
        assert flag in proc.stdout
    # Nothing outside the standard library is imported when the optional codecs are absent.
    check = ("import sys; sys.modules['zstandard']=None; sys.modules['lz4']=None; sys.modules['xxhash']=None;"
             f"sys.path.insert(0, {str(path)!r}); before = set(sys.modules);"
             "import rehost.agent.runner, rehost.agent.installer, rehost.agent.sender, rehost.agent.tracker;"
             "print(sorted(m for m in set(sys.modules) - before if sys.modules[m] is not None"
             " and m.split('.')[0] not in sys.stdlib_module_names and m.split('.')[0] != 'rehost'))")
    proc = subprocess.run(["/usr/bin/python3", "-I", "-c", check], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_device_selection_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="Unknown device: /nope"):
        select_disks(["/nope"])
    with pytest.raises(InvalidInput, match="Unknown device"):
        select_disks([str(tmp_path)])  # a directory
    image = make_image(tmp_path / "a.img", MiB, [])
    disks = select_disks([str(image), str(image)])
    assert [d.name for d in disks] == [str(image)] and not disks[0].is_boot


def test_tags() -> None:
    assert _tags(["Env=prod", "Team=web,Tier=1"]) == {"Env": "prod", "Team": "web", "Tier": "1"}
    with pytest.raises(InvalidInput):
        _tags(["novalue"])


def test_state_files_survive_concurrent_writers(tmp_path: Path) -> None:
    """A reinstall over a running agent's state directory writes replication.json while the agent does:
    each writer has its own temporary file, so neither renames the other's away (FileNotFoundError) and the
    file is always one writer's whole document."""
    import json
    import threading

    from rehost.agent.state import AgentState

    state = AgentState(str(tmp_path)).ensure()
    failures: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(300):
                state.save_replication({"writer": n, "i": i})
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    doc = json.loads((tmp_path / "replication.json").read_text())
    assert doc["i"] == 299 and doc["writer"] in range(4)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
