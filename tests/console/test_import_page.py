"""The console's Import and export page over HTTP against a real server: a CSV uploaded from the browser is
imported (its good rows applied, its bad rows listed), an export is started; IAM decides, nothing is stored
for a user who may not import."""

from __future__ import annotations

import html
import re
import secrets
import time
from typing import Any

import pytest

from console import test_http
from console.conftest import ConsoleEnv
from console.httpclient import ConsoleClient
from helpers import rehost_cli

admin = test_http.admin  # the signed-in admin's client, a module fixture
IMPORT_LINK = re.compile(r"/console/import/(import-[0-9a-zA-Z]{17})")


@pytest.fixture(scope="module")
def mgn(console_env: ConsoleEnv) -> Any:
    return console_env.server.client(console_env.admin_key)


def _wait(mgn: Any, kind: str, task_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = getattr(mgn, f"list_{kind}s")(filters={f"{kind}IDs": [task_id]})["items"][0]
        if task["status"] in ("SUCCEEDED", "FAILED"):
            return dict(task)
        time.sleep(0.05)
    raise AssertionError(f"{kind} {task_id} did not end within {timeout} s")


def _uploads(console_env: ConsoleEnv) -> list[str]:
    bucket = console_env.server.data_dir / "buckets" / "rehost-console-imports"
    return sorted(str(p) for p in bucket.rglob("*")) if bucket.exists() else []


def test_upload_an_import_file_and_see_its_errors(console_env: ConsoleEnv, admin: ConsoleClient, mgn: Any) -> None:
    app = f"shop-{secrets.token_hex(3)}"
    csv = f"mgn:app:name,mgn:app:description,mgn:server:user-provided-id,mgn:server:platform\r\n" \
          f"{app},from the console,web-{app},LINUX\r\n{app}-bad,,db-{app},AMIGAOS\r\n".encode()
    page = admin.get("/console/import")
    assert page.status == 200 and 'enctype="multipart/form-data"' in page.body and "No imports yet." in page.body
    resp = admin.post_multipart("/console/import/upload", {"csrf": admin.csrf(), "back": "/console/import"},
                                {"file": ("wave 1 (final).csv", csv)})
    assert resp.status == 303 and resp.headers["location"] == "/console/import"
    listing = admin.get("/console/import").body
    m = IMPORT_LINK.search(listing)
    assert m and "started" in listing, listing[:2000]
    import_id = m.group(1)
    task = _wait(mgn, "import", import_id)
    assert task["status"] == "SUCCEEDED" and task["s3BucketSource"]["s3Bucket"] == "rehost-console-imports"
    assert task["s3BucketSource"]["s3Key"].endswith("-wave-1-final-.csv")
    assert task["summary"]["applications"] == {"createdCount": 1, "modifiedCount": 0}
    assert [a["description"] for a in mgn.list_applications()["items"] if a["name"] == app] == ["from the console"]
    assert not [a for a in mgn.list_applications()["items"] if a["name"] == f"{app}-bad"]
    detail = admin.get(f"/console/import/{import_id}")
    assert detail.status == 200 and "SUCCEEDED" in detail.body
    assert "AMIGAOS" in html.unescape(detail.body) and ">3<" in detail.body  # the bad row, as a spreadsheet numbers it
    assert "1 created, 0 modified" in admin.get("/console/import").body

    # Not a CSV file: refused before anything is stored.
    before = _uploads(console_env)
    resp = admin.post_multipart("/console/import/upload", {"csrf": admin.csrf(), "back": "/console/import"},
                                {"file": ("inventory.xlsx", b"PK\x03\x04")})
    assert resp.status == 303 and "is not a .csv file" in html.unescape(admin.get("/console/import").body)
    assert _uploads(console_env) == before


def test_a_reader_cannot_upload_and_nothing_is_stored(console_env: ConsoleEnv) -> None:
    viewer = ConsoleClient(console_env.endpoint)
    assert viewer.sign_in(*console_env.readonly_key).status == 303
    page = viewer.get("/console/import")
    assert page.status == 200 and "Import from local disk" not in page.body  # no form for a reader
    before = _uploads(console_env)
    resp = viewer.post_multipart("/console/import/upload", {"csrf": viewer.csrf(), "back": "/console/import"},
                                 {"file": ("plan.csv", b"mgn:wave:name\r\nw\r\n")})
    assert resp.status == 303
    assert "mgn:StartImport" in html.unescape(viewer.get("/console/import").body)
    assert _uploads(console_env) == before


def test_start_an_export_from_the_console(console_env: ConsoleEnv, admin: ConsoleClient, mgn: Any) -> None:
    rehost_cli("bucket", "create", "console-exports", data_dir=console_env.server.data_dir)
    resp = admin.post("/console/export", {"csrf": admin.csrf(), "back": "/console/import",
                                          "bucket": "console-exports", "key": "inventory.csv"})
    assert resp.status == 303
    body = html.unescape(admin.get("/console/import").body)
    m = re.search(r"Export (export-[0-9a-zA-Z]{17}) to s3://console-exports/inventory.csv started", body)
    assert m, body[:2000]
    assert _wait(mgn, "export", m.group(1))["status"] == "SUCCEEDED"
    exported = rehost_cli("bucket", "get", "console-exports", "inventory.csv", data_dir=console_env.server.data_dir)
    assert exported.stdout.startswith("mgn:account-id,")
    # A bucket that does not exist: the API's refusal is what the page shows.
    admin.post("/console/export", {"csrf": admin.csrf(), "back": "/console/import", "bucket": "nope-nope", "key": "x.csv"})
    assert "Bucket nope-nope does not exist" in html.unescape(admin.get("/console/import").body)
