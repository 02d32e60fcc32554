"""MGN's inventory CSV format (import and export), as far as rehost can honour it. Pure: no I/O.

The file is a CSV with a header row of ``mgn:*`` column names (MGN User Guide, "Import parameters" and
"Export parameters"); each further row names a wave, an application and/or a source server, with their
settings. Columns rehost reads and writes:

- ``mgn:account-id``, ``mgn:region``: must be this account and region when given;
- ``mgn:wave:id|name|description``, ``mgn:wave:tag:<key>``;
- ``mgn:app:id|name|description``, ``mgn:app:tag:<key>``;
- ``mgn:server:id|user-provided-id|platform|fqdn-for-action-framework``, ``mgn:server:tag:<key>``;
- launch settings kept in the server's launch configuration: ``mgn:launch:placement:operating-system-licensing``
  (``LI`` or ``BYOL``: ``licensing.osByol``) and ``mgn:launch:transfer-server-tags`` (``copyTags``);
- written by an export and accepted back (they report state, which an import cannot set):
  ``mgn:server:lifecycle-state``, ``mgn:server:replication-type``, ``mgn:server:replication-state``.

Any other column (MGN's EC2 launch template columns ``mgn:launch:nic:*``, ``mgn:launch:volume:*``,
``mgn:launch:placement:tenancy`` ..., replication and post-launch columns) is refused row by row: a row
with a value in such a column is an error, a row that leaves it empty is not, so MGN's full template
imports as long as only the columns above are filled in.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

ACCOUNT, REGION = "mgn:account-id", "mgn:region"
WAVE_ID, WAVE_NAME, WAVE_DESCRIPTION, WAVE_TAG = "mgn:wave:id", "mgn:wave:name", "mgn:wave:description", "mgn:wave:tag:"
APP_ID, APP_NAME, APP_DESCRIPTION, APP_TAG = "mgn:app:id", "mgn:app:name", "mgn:app:description", "mgn:app:tag:"
SERVER_ID, SERVER_UPID = "mgn:server:id", "mgn:server:user-provided-id"
SERVER_PLATFORM, SERVER_FQDN, SERVER_TAG = "mgn:server:platform", "mgn:server:fqdn-for-action-framework", "mgn:server:tag:"
LICENSING, TRANSFER_TAGS = "mgn:launch:placement:operating-system-licensing", "mgn:launch:transfer-server-tags"
REPORTS = ("mgn:server:lifecycle-state", "mgn:server:replication-type", "mgn:server:replication-state")

FIXED = (ACCOUNT, REGION, WAVE_ID, WAVE_NAME, WAVE_DESCRIPTION, APP_ID, APP_NAME, APP_DESCRIPTION, SERVER_ID,
         SERVER_UPID, SERVER_PLATFORM, SERVER_FQDN, LICENSING, TRANSFER_TAGS, *REPORTS)
TAG_PREFIXES = (WAVE_TAG, APP_TAG, SERVER_TAG)
MAX_ROWS = 10_000
PLATFORMS = ("linux", "windows")


class FileError(ValueError):
    """The file as a whole cannot be read (the import fails with this one error)."""


@dataclass
class GroupSpec:
    """A wave or an application a row names."""

    id: str = ""
    name: str = ""
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class ServerSpec:
    id: str = ""
    user_provided_id: str = ""
    platform: str = ""
    fqdn: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    os_byol: bool | None = None
    copy_tags: bool | None = None

    @property
    def settings(self) -> bool:
        return bool(self.platform or self.fqdn or self.tags or self.os_byol is not None or self.copy_tags is not None)


@dataclass
class Row:
    number: int  # as a spreadsheet shows it: the header is row 1
    wave: GroupSpec | None = None
    app: GroupSpec | None = None
    server: ServerSpec | None = None


def read(data: bytes) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and the rows (number, column -> value) of a file; FileError if it is not such a CSV."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileError(f"The file is not UTF-8 text (byte {exc.start}).") from None
    if "\x00" in text:
        raise FileError("The file contains a NUL character; it is not a CSV file.")
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise FileError(f"The file is not valid CSV: {exc}.") from None
    if not lines or not any(cell.strip() for cell in lines[0]):
        raise FileError("The file is empty: its first row must name the columns (mgn:...).")
    header = [cell.strip() for cell in lines[0]]
    seen: set[str] = set()
    for name in header:
        if name and name.lower() in seen:
            raise FileError(f"Column {name} appears twice in the header.")
        seen.add(name.lower())
    if not any(name.startswith("mgn:") for name in header):
        raise FileError("The header names no mgn: column; this is not an MGN import file.")
    if len(lines) - 1 > MAX_ROWS:
        raise FileError(f"The file has {len(lines) - 1} rows; at most {MAX_ROWS} are imported at once.")
    rows = []
    for index, cells in enumerate(lines[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue  # blank lines are not rows
        values = {name: cells[i].strip() if i < len(cells) else "" for i, name in enumerate(header)}
        extra = [cell for cell in cells[len(header):] if cell.strip()]
        if extra:
            values["\x00extra"] = ",".join(extra)
        rows.append((index, values))
    return header, rows


def _bool(value: str, column: str, problems: list[str]) -> bool | None:
    if not value:
        return None
    if value.upper() in ("TRUE", "YES"):
        return True
    if value.upper() in ("FALSE", "NO"):
        return False
    problems.append(f"{column} must be TRUE or FALSE, not {value!r}")
    return None


def _text(value: str, column: str, limit: int, problems: list[str]) -> str:
    if len(value) > limit:
        problems.append(f"{column} is longer than {limit} characters")
    return value


def _tag(column: str, key: str, value: str, tags: dict[str, str], problems: list[str]) -> None:
    if not key or len(key) > 128 or key.lower().startswith("aws:"):
        problems.append(f"{column}: a tag key must be 1-128 characters and not start with aws:")
    elif len(value) > 256:
        problems.append(f"{column}: a tag value is at most 256 characters")
    elif value:
        tags[key] = value


def _group_cell(spec: GroupSpec, prefix: str, column: str, value: str, problems: list[str]) -> bool:
    """Read a wave's or an application's cell (``prefix`` is ``mgn:wave:`` or ``mgn:app:``); False if the
    column is none of theirs."""
    field_name = column[len(prefix):]
    if field_name == "id":
        spec.id = value
    elif field_name == "name":
        spec.name = _text(value, column, 256, problems)
    elif field_name == "description":
        spec.description = _text(value, column, 600, problems)
    elif field_name.startswith("tag:"):
        _tag(column, field_name[len("tag:"):], value, spec.tags, problems)
    else:
        return False
    return True


def parse_row(number: int, values: dict[str, str], account_id: str, region: str) -> tuple[Row, list[str]]:
    """A row's wave, application and server, and what is wrong with it (empty when it can be applied)."""
    problems: list[str] = []
    row = Row(number)
    wave, app, server = GroupSpec(), GroupSpec(), ServerSpec()
    if values.get("\x00extra"):
        problems.append("the row has more cells than the header has columns")
    for column, value in values.items():
        if column == "\x00extra" or not value:
            continue
        if column == ACCOUNT:
            if value != account_id:
                problems.append(f"{ACCOUNT} {value} is not this account ({account_id}); rehost serves one account")
        elif column == REGION:
            if value != region:
                problems.append(f"{REGION} {value} is not this region ({region})")
        elif column.startswith("mgn:wave:") and _group_cell(wave, "mgn:wave:", column, value, problems):
            continue
        elif column.startswith("mgn:app:") and _group_cell(app, "mgn:app:", column, value, problems):
            continue
        elif column == SERVER_ID:
            server.id = value
        elif column == SERVER_UPID:
            server.user_provided_id = _text(value, column, 256, problems)
        elif column == SERVER_PLATFORM:
            if value.lower() not in PLATFORMS:
                problems.append(f"{SERVER_PLATFORM} must be LINUX or WINDOWS, not {value!r}")
            server.platform = value.lower()
        elif column == SERVER_FQDN:
            server.fqdn = _text(value, column, 255, problems)
        elif column.startswith(SERVER_TAG):
            _tag(column, column[len(SERVER_TAG):], value, server.tags, problems)
        elif column == LICENSING:
            if value.upper() not in ("LI", "BYOL"):
                problems.append(f"{LICENSING} must be LI or BYOL, not {value!r}")
            server.os_byol = value.upper() == "BYOL"
        elif column == TRANSFER_TAGS:
            server.copy_tags = _bool(value, column, problems)
        elif column in REPORTS:
            continue  # state an export reports; an import cannot set it
        else:
            problems.append(f"column {column or '(unnamed)'} is not one rehost can import")
    if wave.id or wave.name or wave.description is not None or wave.tags:
        if not wave.name:
            problems.append(f"a row that names a wave needs {WAVE_NAME}")
        row.wave = wave
    if app.id or app.name or app.description is not None or app.tags:
        if not app.name:
            problems.append(f"a row that names an application needs {APP_NAME}")
        row.app = app
    if server.id or server.user_provided_id or server.settings:
        if not (server.id or server.user_provided_id):
            problems.append(f"a row with server settings needs {SERVER_UPID} or {SERVER_ID}")
        row.server = server
    if row.wave is None and row.app is None and row.server is None and not problems:
        problems.append("the row names no wave, application or server")
    return row, problems


def write(rows: list[dict[str, str]]) -> bytes:
    """The CSV of ``rows``: the fixed columns, then the tag columns in sorted order."""
    tags = sorted({column for row in rows for column in row if column.startswith(TAG_PREFIXES)})
    header = list(FIXED) + tags
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(column, "") for column in header])
    return out.getvalue().encode()


def server_columns(server: dict[str, Any], tags: dict[str, str]) -> dict[str, str]:
    """The columns of a source server document (with its tags) in an export."""
    launch = server.get("_launchConfiguration") or {}
    byol = (launch.get("licensing") or {}).get("osByol")
    out = {SERVER_ID: server["sourceServerID"], SERVER_UPID: server.get("userProvidedID", ""),
           SERVER_PLATFORM: str(server.get("_platform", "")).upper(),
           SERVER_FQDN: server.get("fqdnForActionFramework", ""),
           LICENSING: "" if byol is None else ("BYOL" if byol else "LI"),
           TRANSFER_TAGS: "" if launch.get("copyTags") is None else str(bool(launch["copyTags"])).upper(),
           REPORTS[0]: server.get("lifeCycle", {}).get("state", ""),
           REPORTS[1]: server.get("replicationType", ""),
           REPORTS[2]: (server.get("dataReplicationInfo") or {}).get("dataReplicationState", "")}
    out.update({SERVER_TAG + key: value for key, value in tags.items()})
    return out


def group_columns(kind: str, doc: dict[str, Any], tags: dict[str, str]) -> dict[str, str]:
    """The columns of an application (``kind`` "app") or a wave ("wave") in an export."""
    id_key = "applicationID" if kind == "app" else "waveID"
    out = {f"mgn:{kind}:id": doc[id_key], f"mgn:{kind}:name": doc["name"],
           f"mgn:{kind}:description": doc.get("description", "")}
    out.update({f"mgn:{kind}:tag:{key}": value for key, value in tags.items()})
    return out
