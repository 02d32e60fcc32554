"""Import and export of the inventory through boto3 and the AWS CLI: MGN's CSV format read from and written
to rehost's object storage (`rehost bucket`), rows applied whole or reported one error each, the tasks'
states and summaries, their errors and IAM, and an export re-imported to the state it describes."""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
import time
from pathlib import Path
from typing import Any

from helpers import cli_json, rehost_cli

from .conftest import Api, ServerFactory, make_api
from .test_applications_waves import _error, _name
from .test_cli import _aws

IMPORT_ID = re.compile(r"^import-[0-9a-zA-Z]{17}$")
EXPORT_ID = re.compile(r"^export-[0-9a-zA-Z]{17}$")


def _put(api: Api, bucket: str, key: str, text: str | bytes, tmp_path: Path) -> None:
    path = tmp_path / secrets.token_hex(4)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    rehost_cli("bucket", "put", bucket, key, str(path), data_dir=api.server.data_dir, env=api.server.env)


def _get(api: Api, bucket: str, key: str) -> str:
    return rehost_cli("bucket", "get", bucket, key, data_dir=api.server.data_dir, env=api.server.env).stdout


def _csv(rows: list[dict[str, str]]) -> str:
    header = list(dict.fromkeys(column for row in rows for column in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _wait(api: Api, kind: str, task_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll ListImports / ListExports until the task has ended (SUCCEEDED or FAILED)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = getattr(api.mgn, f"list_{kind}s")(filters={f"{kind}IDs": [task_id]})["items"]
        assert len(items) == 1
        if items[0]["status"] in ("SUCCEEDED", "FAILED"):
            return dict(items[0])
        assert items[0]["status"] in ("PENDING", "STARTED")
        time.sleep(0.05)
    raise AssertionError(f"{kind} {task_id} did not end within {timeout} s")


def _import(api: Api, bucket: str, key: str, **kwargs: Any) -> dict[str, Any]:
    task = api.mgn.start_import(s3BucketSource={"s3Bucket": bucket, "s3Key": key}, **kwargs)["importTask"]
    assert IMPORT_ID.match(task["importID"]) and task["status"] == "PENDING"
    return _wait(api, "import", task["importID"])


def _errors(api: Api, import_id: str) -> dict[int, dict[str, Any]]:
    items = api.mgn.list_import_errors(importID=import_id)["items"]
    by_row = {int(e["errorData"]["rowNumber"]): dict(e) for e in items}
    assert len(by_row) == len(items), "one error per bad row"
    return by_row


def _by_name(items: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((i for i in items if i["name"] == name), None)


def _server(api: Api, upid: str) -> dict[str, Any] | None:
    found = [s for s in api.mgn.describe_source_servers()["items"] if s.get("userProvidedID") == upid]
    assert len(found) <= 1
    return found[0] if found else None


def test_import_applies_good_rows_and_lists_one_error_per_bad_row(api: Api, tmp_path: Path) -> None:
    wave, app, bad_app, bad_wave = _name("wave"), _name("app"), _name("bad-app"), _name("bad-wave")
    web, db, ghost = _name("web"), _name("db"), _name("ghost")
    archived = api.mgn.create_application(name=_name("archived"))
    api.mgn.archive_application(applicationID=archived["applicationID"])
    # A server its agent registered, with a user-provided ID: the import updates it.
    registered = _name("reg")
    reg_id = api.agent.register(user_provided_id=registered)["sourceServerID"]
    account_id = archived["arn"].split(":")[4]
    rows = [
        # row 2: a wave, an application in it, a new server in the application
        {"mgn:account-id": account_id, "mgn:region": "us-east-1", "mgn:wave:name": wave, "mgn:wave:description": "first",
         "mgn:wave:tag:phase": "1", "mgn:app:name": app, "mgn:app:description": "shop", "mgn:app:tag:team": "blue",
         "mgn:server:user-provided-id": web, "mgn:server:platform": "LINUX",
         "mgn:server:fqdn-for-action-framework": f"{web}.corp.test", "mgn:server:tag:role": "web",
         "mgn:launch:nic:0:subnet-id": ""},
        # row 3: the same application (not created twice), another server with launch settings
        {"mgn:app:name": app, "mgn:server:user-provided-id": db,
         "mgn:launch:placement:operating-system-licensing": "BYOL", "mgn:launch:transfer-server-tags": "TRUE"},
        # row 4: a bad platform: nothing of the row (its new application) is applied
        {"mgn:app:name": bad_app, "mgn:server:user-provided-id": _name("solaris"), "mgn:server:platform": "SOLARIS"},
        # row 5: a column rehost cannot honour, filled in
        {"mgn:wave:name": bad_wave, "mgn:launch:nic:0:subnet-id": "subnet-0123456789abcdef0"},
        # row 6: valid, but its application is archived: the new server of the row is not created either
        {"mgn:app:name": archived["name"], "mgn:server:user-provided-id": ghost},
        # row 7: another account
        {"mgn:account-id": "999999999999", "mgn:app:name": bad_app},
        # row 8: the registered server, found by its user-provided ID, joins the application
        {"mgn:app:name": app, "mgn:server:user-provided-id": registered, "mgn:server:tag:role": "agent"},
    ]
    _put(api, "plans", "mixed.csv", _csv(rows), tmp_path)
    task = _import(api, "plans", "mixed.csv")
    assert task["status"] == "SUCCEEDED" and task["progressPercentage"] == 100.0
    assert task["s3BucketSource"]["s3Bucket"] == "plans" and task["s3BucketSource"]["s3Key"] == "mixed.csv"
    assert task["summary"] == {"waves": {"createdCount": 1, "modifiedCount": 0},
                               "applications": {"createdCount": 1, "modifiedCount": 0},
                               "servers": {"createdCount": 2, "modifiedCount": 1}}, \
        api.mgn.list_import_errors(importID=task["importID"])["items"]
    assert task["creationDateTime"] <= task["endDateTime"]

    errors = _errors(api, task["importID"])
    assert sorted(errors) == [4, 5, 6, 7]
    assert errors[4]["errorType"] == "VALIDATION_ERROR" and "SOLARIS" in errors[4]["errorData"]["rawError"]
    assert errors[5]["errorType"] == "VALIDATION_ERROR"
    assert "mgn:launch:nic:0:subnet-id" in errors[5]["errorData"]["rawError"]
    assert errors[6]["errorType"] == "PROCESSING_ERROR" and "archived" in errors[6]["errorData"]["rawError"]
    assert errors[6]["errorData"]["applicationID"] == archived["applicationID"]
    assert errors[7]["errorType"] == "VALIDATION_ERROR" and "999999999999" in errors[7]["errorData"]["rawError"]

    # Good rows applied ...
    waves = api.mgn.list_waves()["items"]
    apps = api.mgn.list_applications()["items"]
    w, a = _by_name(waves, wave), _by_name(apps, app)
    assert w is not None and a is not None
    assert (w["description"], w["tags"]) == ("first", {"phase": "1"})
    assert (a["description"], a["tags"], a["waveID"]) == ("shop", {"team": "blue"}, w["waveID"])
    assert a["applicationAggregatedStatus"]["totalSourceServers"] == 3
    web_server, db_server = _server(api, web), _server(api, db)
    assert web_server is not None and db_server is not None
    assert web_server["applicationID"] == a["applicationID"] and web_server["tags"] == {"role": "web"}
    assert web_server["fqdnForActionFramework"] == f"{web}.corp.test"
    assert web_server["lifeCycle"]["state"] == "DISCONNECTED"  # waiting for its agent
    launch = api.mgn.get_launch_configuration(sourceServerID=db_server["sourceServerID"])
    assert launch["licensing"] == {"osByol": True} and launch["copyTags"] is True
    reg = _server(api, registered)
    assert reg is not None and reg["sourceServerID"] == reg_id and reg["applicationID"] == a["applicationID"]
    assert reg["tags"] == {"role": "agent"} and reg["lifeCycle"]["state"] == "NOT_READY"
    # ... nothing of a bad row.
    assert _by_name(apps, bad_app) is None and _by_name(waves, bad_wave) is None
    assert _server(api, ghost) is None
    assert api.mgn.describe_source_servers(filters={"applicationIDs": [archived["applicationID"]]})["items"] == []

    # The same file again changes nothing: nothing created, nothing modified, the same rows refused.
    again = _import(api, "plans", "mixed.csv")
    assert again["summary"] == {k: {"createdCount": 0, "modifiedCount": 0}
                                for k in ("waves", "applications", "servers")}
    assert sorted(_errors(api, again["importID"])) == [4, 5, 6, 7]

    # An agent installed with the user-provided ID of an imported server takes its record over.
    taken = api.agent.register(user_provided_id=web)
    assert taken["sourceServerID"] == web_server["sourceServerID"] and taken["isNew"] is False
    assert _server(api, web)["lifeCycle"]["state"] == "NOT_READY"  # type: ignore[index]
    disks = api.mgn.get_replication_configuration(sourceServerID=web_server["sourceServerID"])["replicatedDisks"]
    assert [d["deviceName"] for d in disks] == ["/dev/sda"]


def test_a_file_that_is_no_inventory_fails_the_import(api: Api, tmp_path: Path) -> None:
    _put(api, "plans", "binary.csv", b"\x89PNG\r\n\x1a\n\x00\x00", tmp_path)
    _put(api, "plans", "other.csv", "name,ip\nweb,10.0.0.1\n", tmp_path)
    _put(api, "plans", "only-bad.csv", "mgn:app:name,mgn:server:platform\n,BEOS\n", tmp_path)
    for key, words in (("binary.csv", "UTF-8"), ("other.csv", "mgn:"), ("only-bad.csv", "BEOS")):
        task = _import(api, "plans", key)
        assert task["status"] == "FAILED", key
        errors = api.mgn.list_import_errors(importID=task["importID"])["items"]
        assert len(errors) == 1 and words in errors[0]["errorData"]["rawError"], errors


def test_import_and_export_errors(api: Api, tmp_path: Path) -> None:
    _put(api, "plans", "one.csv", _csv([{"mgn:wave:name": _name("w")}]), tmp_path)
    rehost_cli("bucket", "create", "exports", data_dir=api.server.data_dir, env=api.server.env)
    source = {"s3Bucket": "plans", "s3Key": "one.csv"}
    err = _error(api.mgn.start_import, "ResourceNotFoundException",
                 s3BucketSource={"s3Bucket": "plans", "s3Key": "missing.csv"})
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 404
    _error(api.mgn.start_import, "ResourceNotFoundException", s3BucketSource={"s3Bucket": "no-such-bucket", "s3Key": "a.csv"})
    for bad in ({"s3Bucket": "plans", "s3Key": "one.txt"}, {"s3Bucket": "plans", "s3Key": "../plans/one.csv"},
                {"s3Bucket": "Plans!", "s3Key": "one.csv"}, {"s3Bucket": "..", "s3Key": "x.csv"},
                {**source, "s3BucketOwner": "999999999999"}):
        _error(api.mgn.start_import, "ValidationException", s3BucketSource=bad)
    _error(api.mgn.start_export, "ValidationException", s3Bucket="no-such-bucket", s3Key="x.csv")
    _error(api.mgn.start_export, "ValidationException", s3Bucket="exports", s3Key="x.json")
    _error(api.mgn.list_import_errors, "ValidationException", importID="import-00000000000000000")
    _error(api.mgn.list_import_errors, "ValidationException", importID="import-0000000000000000!")
    _error(api.mgn.list_export_errors, "ValidationException", exportID="export-00000000000000000")

    # clientToken: the same request again answers the same task; another source with it is a conflict.
    first = api.mgn.start_import(s3BucketSource=source, clientToken="plan-1", tags={"src": "test"})["importTask"]
    assert api.mgn.start_import(s3BucketSource=source, clientToken="plan-1")["importTask"]["importID"] == first["importID"]
    _put(api, "plans", "two.csv", _csv([{"mgn:wave:name": _name("w")}]), tmp_path)
    _error(api.mgn.start_import, "ConflictException", s3BucketSource={"s3Bucket": "plans", "s3Key": "two.csv"},
           clientToken="plan-1")
    assert first["tags"] == {"src": "test"}
    assert api.mgn.list_tags_for_resource(resourceArn=first["arn"])["tags"] == {"src": "test"}
    assert first["arn"].endswith(f":import/{first['importID']}")
    _wait(api, "import", first["importID"])

    # Listing: filters and pages.
    second = _import(api, "plans", "two.csv")
    page = api.mgn.list_imports(maxResults=1)
    assert len(page["items"]) == 1 and page["nextToken"]
    seen = [page["items"][0]["importID"]]
    while page.get("nextToken"):
        page = api.mgn.list_imports(maxResults=1, nextToken=page["nextToken"])
        seen += [i["importID"] for i in page["items"]]
    assert {first["importID"], second["importID"]} <= set(seen) and len(seen) == len(set(seen))

    export = api.mgn.start_export(s3Bucket="exports", s3Key="inv/all.csv", tags={"k": "v"})["exportTask"]
    assert EXPORT_ID.match(export["exportID"]) and export["status"] == "PENDING"
    done = _wait(api, "export", export["exportID"])
    assert done["status"] == "SUCCEEDED" and done["progressPercentage"] == 100.0
    assert done["summary"]["wavesCount"] >= 2 and done["tags"] == {"k": "v"}
    assert api.mgn.list_export_errors(exportID=export["exportID"])["items"] == []
    assert _get(api, "exports", "inv/all.csv").startswith("mgn:account-id,mgn:region,")

    # An export that cannot be written fails, with its reason.
    _put(api, "exports", "taken", "an object where the export wants a prefix", tmp_path)
    failed = _wait(api, "export", api.mgn.start_export(s3Bucket="exports", s3Key="taken/x.csv")["exportTask"]["exportID"])
    assert failed["status"] == "FAILED"
    reasons = api.mgn.list_export_errors(exportID=failed["exportID"])["items"]
    assert len(reasons) == 1 and "taken" in reasons[0]["errorData"]["rawError"]


def test_export_then_import_restores_what_was_exported(servers: ServerFactory, tmp_path: Path) -> None:
    api = make_api(servers.new())
    wave = api.mgn.create_wave(name="Wave 1", description="first wave", tags={"phase": "one"})
    apps = [api.mgn.create_application(name=f"App {n}", description=f"application {n}", tags={"n": str(n)})
            for n in (1, 2)]
    api.mgn.create_application(name="App 3 (empty)", description="no servers")
    api.mgn.associate_applications(waveID=wave["waveID"], applicationIDs=[a["applicationID"] for a in apps])
    # No replication: nothing about these servers changes on its own between the two exports.
    sids = [api.agent.register(tags={"role": f"r{n}"}, no_replication=True)["sourceServerID"] for n in range(3)]
    api.mgn.update_source_server(sourceServerID=sids[0], userProvidedID="srv-0", fqdnForActionFramework="srv-0.test")
    api.mgn.associate_source_servers(applicationID=apps[0]["applicationID"], sourceServerIDs=sids[:2])
    api.mgn.associate_source_servers(applicationID=apps[1]["applicationID"], sourceServerIDs=sids[2:])
    api.mgn.create_wave(name="Wave 2 (empty)", description="later")
    rehost_cli("bucket", "create", "inventory", data_dir=api.server.data_dir, env=api.server.env)

    export = _wait(api, "export", api.mgn.start_export(s3Bucket="inventory", s3Key="v1.csv")["exportTask"]["exportID"])
    assert export["summary"] == {"serversCount": 3, "applicationsCount": 3, "wavesCount": 2}
    exported = _get(api, "inventory", "v1.csv")
    table = list(csv.DictReader(io.StringIO(exported)))
    assert len(table) == 3 + 1 + 1  # a row per server, per application without servers, per wave without any
    first = next(r for r in table if r["mgn:server:id"] == sids[0])
    assert (first["mgn:server:user-provided-id"], first["mgn:server:fqdn-for-action-framework"]) == ("srv-0", "srv-0.test")
    assert (first["mgn:app:name"], first["mgn:wave:name"], first["mgn:server:tag:role"]) == ("App 1", "Wave 1", "r0")
    assert (first["mgn:server:lifecycle-state"], first["mgn:app:tag:n"], first["mgn:wave:tag:phase"]) == \
        ("NOT_READY", "1", "one")

    # Drift away from the exported plan ...
    api.mgn.update_wave(waveID=wave["waveID"], description="changed")
    api.mgn.untag_resource(resourceArn=apps[1]["arn"], tagKeys=["n"])
    api.mgn.disassociate_source_servers(applicationID=apps[0]["applicationID"], sourceServerIDs=sids[:2])
    api.mgn.associate_source_servers(applicationID=apps[1]["applicationID"], sourceServerIDs=[sids[0]])
    api.mgn.disassociate_applications(waveID=wave["waveID"], applicationIDs=[apps[1]["applicationID"]])
    api.mgn.update_application(applicationID=apps[0]["applicationID"], name="App One")
    # ... and import the export: everything is back, and a new export is the same file.
    task = _import(api, "inventory", "v1.csv")
    assert task["status"] == "SUCCEEDED", api.mgn.list_import_errors(importID=task["importID"])
    assert api.mgn.list_import_errors(importID=task["importID"])["items"] == []
    assert task["summary"] == {"waves": {"createdCount": 0, "modifiedCount": 1},
                               "applications": {"createdCount": 0, "modifiedCount": 2},
                               "servers": {"createdCount": 0, "modifiedCount": 2}}
    again = _wait(api, "export", api.mgn.start_export(s3Bucket="inventory", s3Key="v2.csv")["exportTask"]["exportID"])
    assert again["status"] == "SUCCEEDED"
    assert _get(api, "inventory", "v2.csv") == exported


def test_iam_and_an_uninitialized_account(servers: ServerFactory, api: Api, tmp_path: Path) -> None:
    _put(api, "plans", "iam.csv", _csv([{"mgn:wave:name": _name("w")}]), tmp_path)
    data_dir, env = api.server.data_dir, api.server.env
    user = _name("reader")
    cli_json("iam", "create-user", user, data_dir=data_dir, env=env)
    rehost_cli("iam", "attach-user-policy", user, "arn:aws:iam::aws:policy/AWSApplicationMigrationReadOnlyAccess",
               data_dir=data_dir, env=env)
    reader = api.server.client(api.server.access_key(user))
    err = _error(reader.start_import, "AccessDeniedException", s3BucketSource={"s3Bucket": "plans", "s3Key": "iam.csv"})
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 403 and "mgn:StartImport" in err["Error"]["Message"]
    _error(reader.start_export, "AccessDeniedException", s3Bucket="plans", s3Key="x.csv")
    assert "items" in reader.list_imports() and "items" in reader.list_exports()  # ReadOnly lists them

    fresh = make_api(servers.new(), initialize=False)
    for call, kwargs in ((fresh.mgn.start_import, {"s3BucketSource": {"s3Bucket": "plans", "s3Key": "a.csv"}}),
                         (fresh.mgn.list_imports, {}), (fresh.mgn.list_exports, {}),
                         (fresh.mgn.start_export, {"s3Bucket": "plans", "s3Key": "a.csv"}),
                         (fresh.mgn.list_import_errors, {"importID": "import-00000000000000000"})):
        _error(call, "UninitializedAccountException", **kwargs)


def test_aws_cli_import_and_export(api: Api, tmp_path: Path) -> None:
    app = _name("cli-app")
    _put(api, "cli", "plan.csv", _csv([{"mgn:app:name": app}, {"mgn:server:platform": "LINUX"}]), tmp_path)
    proc = _aws(api, tmp_path, "start-import", "--s3-bucket-source", "s3Bucket=cli,s3Key=plan.csv")
    assert proc.returncode == 0, proc.stderr
    import_id = json.loads(proc.stdout)["importTask"]["importID"]
    _wait(api, "import", import_id)
    proc = _aws(api, tmp_path, "list-imports", "--filters", json.dumps({"importIDs": [import_id]}))
    assert proc.returncode == 0, proc.stderr
    task = json.loads(proc.stdout)["items"][0]
    assert task["status"] == "SUCCEEDED" and task["summary"]["applications"]["createdCount"] == 1
    proc = _aws(api, tmp_path, "list-import-errors", "--import-id", import_id)
    assert proc.returncode == 0, proc.stderr
    assert [e["errorData"]["rowNumber"] for e in json.loads(proc.stdout)["items"]] == [3]
    proc = _aws(api, tmp_path, "start-export", "--s3-bucket", "cli", "--s3-key", "out.csv")
    assert proc.returncode == 0, proc.stderr
    export_id = json.loads(proc.stdout)["exportTask"]["exportID"]
    _wait(api, "export", export_id)
    proc = _aws(api, tmp_path, "list-exports")
    assert proc.returncode == 0 and export_id in proc.stdout, proc.stderr
    proc = _aws(api, tmp_path, "list-export-errors", "--export-id", export_id)
    assert proc.returncode == 0 and json.loads(proc.stdout)["items"] == [], proc.stderr
    assert app in _get(api, "cli", "out.csv")
    proc = _aws(api, tmp_path, "start-import", "--s3-bucket-source", "s3Bucket=cli,s3Key=absent.csv")
    assert proc.returncode != 0 and "ResourceNotFoundException" in proc.stderr


def test_bucket_cli_mistakes_are_one_line_errors(api: Api, tmp_path: Path) -> None:
    data_dir, env = api.server.data_dir, api.server.env
    good = tmp_path / "good.csv"
    good.write_text("mgn:wave:name\nw\n")
    for args in (("bucket", "get", "no-such-bucket", "a.csv"), ("bucket", "put", "Bad_Bucket", "a.csv", str(good)),
                 ("bucket", "put", "plans", "../escape.csv", str(good)),
                 ("bucket", "put", "plans", "a.csv", str(tmp_path / "nope")),
                 ("bucket", "ls", "no-such-bucket")):
        proc = rehost_cli(*args, data_dir=data_dir, env=env, check=False)
        assert proc.returncode != 0, args
        assert proc.stderr.startswith("rehost: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert not (data_dir / "escape.csv").exists() and not (data_dir / "buckets" / "escape.csv").exists()
