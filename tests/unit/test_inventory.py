"""MGN's inventory CSV as rehost reads and writes it (`rehost.api.mgn.inventory`), and the directory object
store that holds the files (`rehost.objectstore`)."""

from __future__ import annotations

import csv
import io
import stat
from pathlib import Path

import pytest

from rehost.api.mgn import inventory as inv
from rehost.errors import InvalidInput, NotFound
from rehost.objectstore import DirectoryObjectStore

ACCOUNT, REGION = "123456789012", "us-east-1"


def test_a_row_names_a_wave_an_application_and_a_server() -> None:
    row, problems = inv.parse_row(5, {
        "mgn:account-id": ACCOUNT, "mgn:region": REGION, "mgn:wave:name": "W", "mgn:wave:tag:phase": "1",
        "mgn:app:id": "app-0123456789abcdefg", "mgn:app:name": "A", "mgn:app:description": "d",
        "mgn:server:user-provided-id": "web-1", "mgn:server:platform": "Linux", "mgn:server:tag:role": "web",
        "mgn:launch:placement:operating-system-licensing": "li", "mgn:launch:transfer-server-tags": "false",
        "mgn:server:lifecycle-state": "READY_FOR_TEST", "mgn:launch:nic:0:subnet-id": ""}, ACCOUNT, REGION)
    assert problems == []
    assert row.number == 5 and row.wave == inv.GroupSpec(name="W", tags={"phase": "1"})
    assert row.app == inv.GroupSpec(id="app-0123456789abcdefg", name="A", description="d")
    assert row.server == inv.ServerSpec(user_provided_id="web-1", platform="linux", tags={"role": "web"},
                                        os_byol=False, copy_tags=False)


@pytest.mark.parametrize(("values", "words"), [
    ({"mgn:account-id": "999999999999", "mgn:app:name": "A"}, "999999999999"),
    ({"mgn:region": "eu-west-1", "mgn:app:name": "A"}, "eu-west-1"),
    ({"mgn:app:name": "A", "mgn:launch:instance-type": "m5.large"}, "mgn:launch:instance-type"),
    ({"mgn:app:name": "A", "custom": "x"}, "column custom"),
    ({"mgn:app:description": "no name"}, "needs mgn:app:name"),
    ({"mgn:server:platform": "LINUX"}, "needs mgn:server:user-provided-id"),
    ({"mgn:server:user-provided-id": "x", "mgn:server:platform": "OS/2"}, "LINUX or WINDOWS"),
    ({"mgn:server:user-provided-id": "x", "mgn:launch:transfer-server-tags": "maybe"}, "TRUE or FALSE"),
    ({"mgn:server:user-provided-id": "x", "mgn:launch:placement:operating-system-licensing": "GPL"}, "LI or BYOL"),
    ({"mgn:app:name": "A", "mgn:app:tag:aws:x": "y"}, "tag key"),
    ({"mgn:app:name": "A" * 257}, "longer than 256"),
    ({"mgn:launch:nic:0:subnet-id": ""}, "names no wave, application or server"),
])
def test_what_is_wrong_with_a_row_is_said(values: dict[str, str], words: str) -> None:
    _, problems = inv.parse_row(3, values, ACCOUNT, REGION)
    assert any(words in p for p in problems), problems


def test_a_file_that_is_no_inventory() -> None:
    for data, words in ((b"\xff\xfe\x00", "UTF-8"), (b"", "empty"), (b"a,b\n1,2\n", "no mgn: column"),
                        (b"mgn:app:name,MGN:APP:NAME\nx,y\n", "twice"), (b"mgn:app:name\nx\x00\n", "NUL")):
        with pytest.raises(inv.FileError, match=words):
            inv.read(data)
    header, rows = inv.read("\ufeffmgn:app:name,mgn:app:description\r\nA,\"d, with a comma\"\r\n,\r\nB,x,extra\r\n".encode())
    assert header == ["mgn:app:name", "mgn:app:description"]
    assert rows[0] == (2, {"mgn:app:name": "A", "mgn:app:description": "d, with a comma"})
    assert rows[1][0] == 4 and rows[1][1]["\x00extra"] == "extra"  # the blank row 3 is no row
    assert "more cells" in inv.parse_row(4, rows[1][1], ACCOUNT, REGION)[1][0]


def test_write_puts_fixed_columns_then_sorted_tags() -> None:
    data = inv.write([{inv.APP_NAME: "A", "mgn:server:tag:z": "1", "mgn:app:tag:a": "2"}, {inv.WAVE_NAME: "W"}])
    table = list(csv.reader(io.StringIO(data.decode())))
    assert table[0][:len(inv.FIXED)] == list(inv.FIXED)
    assert table[0][len(inv.FIXED):] == ["mgn:app:tag:a", "mgn:server:tag:z"]
    header, rows = inv.read(data)
    assert rows[0][1][inv.APP_NAME] == "A" and rows[1][1][inv.WAVE_NAME] == "W"


def test_directory_object_store(tmp_path: Path) -> None:
    store = DirectoryObjectStore(tmp_path / "buckets")
    with pytest.raises(NotFound):
        store.put("plans", "a.csv", b"x")  # as S3: the bucket must exist
    store.create_bucket("plans")
    store.put("plans", "dir/a.csv", b"hello")
    assert store.get("plans", "dir/a.csv") == b"hello"
    assert stat.S_IMODE((tmp_path / "buckets" / "plans" / "dir" / "a.csv").stat().st_mode) == 0o600
    assert store.list("plans") == [("dir/a.csv", 5)]
    with pytest.raises(InvalidInput):
        store.get("plans", "dir/a.csv", max_bytes=4)
    with pytest.raises(NotFound):
        store.get("plans", "dir/b.csv")
    for bucket, key in (("plans", "../x.csv"), ("plans", "/abs.csv"), ("plans", "a//b.csv"), ("..", "x.csv"),
                        ("UPPER", "x.csv"), ("a", "x.csv"), ("plans", "a\\b.csv")):
        with pytest.raises(InvalidInput):
            store.put(bucket, key, b"x")
    with pytest.raises(InvalidInput):
        store.put("plans", "dir/a.csv/b.csv", b"x")  # a prefix of the key is an object
    assert not (tmp_path / "x.csv").exists()
