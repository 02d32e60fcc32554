"""Import and export: MGN console's Import (from a local file or a bucket) and Export pages.

Uploading a file stores it in a bucket of rehost's object storage kept for the console's uploads
(``rehost-console-imports``, as MGN's console copies a local file into a bucket of its own) and starts
the import from there with StartImport; the user needs ``mgn:StartImport`` before anything is stored.
Everything else goes through `Ctx.call`, so IAM and the API's rules decide, and their refusals show.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.datastructures import UploadFile
from starlette.responses import Response

from rehost import ids
from rehost.console import present
from rehost.console.core import Ctx, Refused

UPLOAD_BUCKET = "rehost-console-imports"
UPLOAD_MAX_BYTES = 8 * 1024 * 1024
TONES = {"PENDING": "neutral", "STARTED": "progress", "SUCCEEDED": "success", "FAILED": "error"}


def _task_row(task: dict[str, Any], id_key: str) -> dict[str, Any]:
    source = task.get("s3BucketSource") or task
    summary = task.get("summary") or {}
    return {"id": task[id_key], "status": task.get("status", ""), "tone": TONES.get(task.get("status", ""), "neutral"),
            "location": f"s3://{source.get('s3Bucket', '')}/{source.get('s3Key', '')}",
            "progress": f"{float(task.get('progressPercentage') or 0):.0f}%",
            "created": present.when(task.get("creationDateTime")),
            "ended": present.when(task["endDateTime"]) if task.get("endDateTime") else "—",
            "summary": summary}


def import_page(ctx: Ctx) -> Response:
    if not ctx.cp.mgn.is_initialized():
        return ctx.redirect("/getting-started")
    imports = [_task_row(t, "importID") for t in reversed(ctx.call("ListImports")["items"])]
    exports = [_task_row(t, "exportID") for t in reversed(ctx.call("ListExports")["items"])]
    return ctx.render("import.html", nav="import", imports=imports, exports=exports, upload_bucket=UPLOAD_BUCKET,
                      upload_max=UPLOAD_MAX_BYTES)


def import_detail(ctx: Ctx) -> Response:
    import_id = ctx.request.path_params["import_id"]
    items = ctx.call("ListImports", filters={"importIDs": [import_id]})["items"]
    if not items:
        raise Refused("ResourceNotFoundException", f"Import {import_id} not found.")
    errors = ctx.call("ListImportErrors", importID=import_id)["items"]
    rows = [{"row": (e.get("errorData") or {}).get("rowNumber", ""), "type": e.get("errorType", ""),
             "message": (e.get("errorData") or {}).get("rawError", ""),
             "ids": [v for k, v in (e.get("errorData") or {}).items() if k.endswith("ID") and k != "accountID"]}
            for e in errors]
    return ctx.render("import_detail.html", nav="import", task=_task_row(items[0], "importID"), errors=rows)


def _safe_name(filename: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]).strip("-.")
    return name[-100:] or "import.csv"


def import_upload(ctx: Ctx) -> Response:
    """Store the chosen file in the console's upload bucket and start its import."""
    assert ctx.form is not None
    upload = ctx.form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise Refused("ValidationException", "Choose a CSV file to import.")
    name = _safe_name(upload.filename)
    if not name.lower().endswith(".csv"):
        raise Refused("ValidationException", f"{upload.filename} is not a .csv file; MGN imports CSV files.")
    ctx.authorize("mgn:StartImport")  # nothing is stored for a user who may not import
    data = upload.file.read(UPLOAD_MAX_BYTES + 1)
    if len(data) > UPLOAD_MAX_BYTES:
        raise Refused("ValidationException", f"{upload.filename} is larger than {UPLOAD_MAX_BYTES} bytes.")
    key = f"uploads/{ids.utcnow().strftime('%Y%m%dT%H%M%SZ')}-{ids.new_id('u')[2:10]}-{name}"
    objects = ctx.cp.mgn.object_store()
    objects.create_bucket(UPLOAD_BUCKET)
    objects.put(UPLOAD_BUCKET, key, data)
    task = ctx.call("StartImport", s3BucketSource={"s3Bucket": UPLOAD_BUCKET, "s3Key": key})["importTask"]
    ctx.flash("success", f"Import {task['importID']} of {upload.filename} started.",
              ("View import", f"{ctx.base}/import/{task['importID']}"))
    return ctx.redirect("/import")


def import_from_bucket(ctx: Ctx) -> Response:
    assert ctx.form is not None
    source = {"s3Bucket": str(ctx.form.get("bucket") or "").strip(), "s3Key": str(ctx.form.get("key") or "").strip()}
    task = ctx.call("StartImport", s3BucketSource=source)["importTask"]
    ctx.flash("success", f"Import {task['importID']} of s3://{source['s3Bucket']}/{source['s3Key']} started.",
              ("View import", f"{ctx.base}/import/{task['importID']}"))
    return ctx.redirect("/import")


def export_start(ctx: Ctx) -> Response:
    assert ctx.form is not None
    task = ctx.call("StartExport", s3Bucket=str(ctx.form.get("bucket") or "").strip(),
                    s3Key=str(ctx.form.get("key") or "").strip())["exportTask"]
    ctx.flash("success", f"Export {task['exportID']} to s3://{task['s3Bucket']}/{task['s3Key']} started.")
    return ctx.redirect("/import")


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/import", import_page, ["GET"]),
    ("/import/upload", import_upload, ["POST"]),
    ("/import/from-bucket", import_from_bucket, ["POST"]),
    ("/import/{import_id}", import_detail, ["GET"]),
    ("/export", export_start, ["POST"]),
]
