"""Verification of damaged chunks, qcow2 export, and the `rehost snapshot` CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rehost.chunkstore import CHUNK_SIZE
from rehost.chunkstore.snapshots import SnapshotStore, VolumeSource
from rehost.cli.main import main
from rehost.errors import InvalidInput, SnapshotError

from .helpers import make_image, mixed_image, rand, sha256_file

SID = "s-0123456789abcdef0"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _one_snapshot(store: SnapshotStore, tmp_path: Path) -> tuple[str, Path]:
    img = mixed_image(tmp_path / "a.img")
    return store.create(SID, {"/dev/sda": VolumeSource(img, img.stat().st_size, None)}, T0).snapshot_id, img


def _flip_byte_of_chunk(data_dir: Path, store: SnapshotStore, chunk: bytes) -> str:
    import hashlib

    digest = hashlib.sha256(chunk).digest()
    loc = store.chunks.locate(digest)
    pack = data_dir / "chunks" / "packs" / loc.pack[:2] / loc.pack
    with open(pack, "r+b") as f:
        f.seek(loc.offset + loc.length // 2)
        byte = f.read(1)
        f.seek(loc.offset + loc.length // 2)
        f.write(bytes([byte[0] ^ 0x40]))
    return digest.hex()


def test_verify_finds_a_flipped_byte_and_names_the_snapshot(
    store: SnapshotStore, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap_id, img = _one_snapshot(store, tmp_path)
    assert store.verify().ok
    assert main(["snapshot", "verify", "--data-dir", str(data_dir)]) == 0

    bad = _flip_byte_of_chunk(data_dir, store, img.read_bytes()[:CHUNK_SIZE])
    report = store.verify()

    assert not report.ok
    assert [b.digest for b in report.bad_chunks] == [bad]
    assert report.bad_chunks[0].snapshots == ((SID, snap_id),)
    with pytest.raises(SnapshotError):  # reading the damaged chunk fails loudly, never silently
        store.export(SID, snap_id, "/dev/sda", tmp_path / "out.raw")

    capsys.readouterr()
    assert main(["snapshot", "verify", "--data-dir", str(data_dir)]) != 0
    out, err = capsys.readouterr()
    assert out.count("bad chunk") == 1 and bad in out and snap_id in out
    assert err.startswith("rehost: error:") and err.count("\n") == 1


def test_verify_reports_missing_chunks_and_damaged_manifests(
    store: SnapshotStore, tmp_path: Path, data_dir: Path
) -> None:
    snap_id, _ = _one_snapshot(store, tmp_path)
    for pack in (data_dir / "chunks" / "packs").rglob("*"):
        if pack.is_file():
            pack.unlink()
    report = store.verify()
    assert report.bad_chunks and all("unreadable" in b.reason for b in report.bad_chunks)
    (data_dir / "chunks" / "manifests" / SID / snap_id).write_bytes(b"garbage")
    report = store.verify()
    assert report.bad_manifests and report.bad_manifests[0][0].endswith(snap_id)


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_qcow2_export_converts_back_to_identical_raw(store: SnapshotStore, tmp_path: Path) -> None:
    snap_id, img = _one_snapshot(store, tmp_path)
    qcow = tmp_path / "disk.qcow2"
    store.export(SID, snap_id, "/dev/sda", qcow, "qcow2")
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(qcow)], check=True, capture_output=True
        ).stdout
    )
    assert info["format"] == "qcow2" and info["virtual-size"] >= img.stat().st_size
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(qcow), str(back)], check=True)
    # qcow2 rounds the virtual size up to a 512-byte sector; the disk's bytes must be identical.
    assert back.read_bytes()[: img.stat().st_size] == img.read_bytes()
    assert list(tmp_path.glob(".disk.qcow2*")) == []  # the raw temporary is gone
    with pytest.raises(InvalidInput):
        store.export(SID, snap_id, "/dev/sda", tmp_path / "x.vmdk", "vmdk")


def test_cli_list_and_export(
    store: SnapshotStore, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, img = _one_snapshot(store, tmp_path)
    with open(img, "r+b") as f:
        f.write(rand(CHUNK_SIZE, 99))
    newest = store.create(
        SID, {"/dev/sda": VolumeSource(img, img.stat().st_size, None)}, datetime(2026, 3, 2, tzinfo=UTC)
    )

    assert main(["snapshot", "list", SID, "--data-dir", str(data_dir)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["SNAPSHOT", "ID"]
    assert [line.split()[0] for line in table[1:]] == [newest.snapshot_id, first]

    assert main(["snapshot", "list", SID, "--data-dir", str(data_dir), "--output", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["snapshotID"] for s in doc["snapshots"]] == [newest.snapshot_id, first]
    assert doc["snapshots"][1]["takenAt"] == "2026-03-01T12:00:00.000000Z"
    assert doc["snapshots"][0]["disks"] == [{"deviceName": "/dev/sda", "bytes": img.stat().st_size}]

    out = tmp_path / "newest.raw"
    assert (
        main(
            [
                "snapshot",
                "export",
                SID,
                "--disk",
                "/dev/sda",
                "--output",
                str(out),
                "--data-dir",
                str(data_dir),
            ]
        )
        == 0
    )
    assert sha256_file(out) == sha256_file(img)  # the newest by default
    out_first = tmp_path / "first.raw"
    args = ["snapshot", "export", SID, "--disk", "/dev/sda", "--snapshot", first, "--output", str(out_first)]
    assert main([*args, "--data-dir", str(data_dir)]) == 0
    assert sha256_file(out_first) != sha256_file(img)


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["snapshot", "list", "s-fffffffffffffffff"], 3, "has no snapshots"),
        (
            [
                "snapshot",
                "export",
                SID,
                "--disk",
                "/dev/sda",
                "--snapshot",
                "snap-00000000000000000",
                "--output",
                "{tmp}/o",
            ],
            3,
            "not found",
        ),
        (
            ["snapshot", "export", SID, "--disk", "/dev/nvme9n1", "--output", "{tmp}/o"],
            3,
            "no disk /dev/nvme9n1",
        ),
        (
            ["snapshot", "export", SID, "--disk", "/dev/sda", "--output", "{tmp}/no/such/dir/o"],
            2,
            "does not exist",
        ),
        (["snapshot", "create", SID], 3, SID),  # no such server in the control plane
    ],
)
def test_cli_errors_are_one_line_and_a_nonzero_exit(
    store: SnapshotStore,
    tmp_path: Path,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    words: str,
) -> None:
    _one_snapshot(store, tmp_path)
    capsys.readouterr()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main([*argv, "--data-dir", str(data_dir)]) == code
    out, err = capsys.readouterr()
    assert err.startswith("rehost: error:") and err.count("\n") == 1 and words in err
    assert "Traceback" not in err


def test_cli_on_a_data_dir_without_a_store_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rehost.cli.main",
            "snapshot",
            "verify",
            "--data-dir",
            str(tmp_path / "nowhere"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3
    assert proc.stderr.startswith("rehost: error: no chunk store") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "nowhere").exists()  # a read-only command creates nothing


def test_export_to_an_existing_file_replaces_it(store: SnapshotStore, tmp_path: Path) -> None:
    snap_id, img = _one_snapshot(store, tmp_path)
    out = make_image(tmp_path / "old.raw", 20 * 1024 * 1024, [(9 * 1024 * 1024, rand(1000, 3))])
    store.export(SID, snap_id, "/dev/sda", out)
    assert sha256_file(out) == sha256_file(img)
