"""The control-plane schema, for SQLite and PostgreSQL alike.

Each record is a row with the columns queries filter or sort on and a JSON document (``doc``) holding the
rest of MGN's wide shapes. ``seq`` columns give a stable creation order for pagination.

Version 2 added ``jobs.owner`` (the control-plane process running a job), ``sequences`` (the counters
behind ``seq``, formerly ``meta`` rows ``seq:<name>``), ``control_plane_processes`` and ``console_sessions``;
``migrate`` brings a version-1 database up to date.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    delete,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection

SCHEMA_VERSION = 2

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

source_servers = Table(
    "source_servers",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("seq", BigInteger, nullable=False, index=True),
    Column("lifecycle_state", String(32), nullable=False),
    Column("is_archived", Boolean, nullable=False, default=False),
    Column("replication_type", String(32), nullable=False),
    Column("identity_key", String(512), nullable=True, unique=True),
    Column("doc", JSON, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("seq", BigInteger, nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("status", String(16), nullable=False, index=True),
    Column("doc", JSON, nullable=False),
    # the control-plane process (control_plane_processes.id) that claimed the job; NULL while PENDING
    Column("owner", String(64), nullable=True),
)

job_log_items = Table(
    "job_log_items",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), nullable=False, index=True),
    Column("doc", JSON, nullable=False),
)

templates = Table(
    "templates",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(16), nullable=False, index=True),  # "replication" | "launch"
    Column("seq", BigInteger, nullable=False),
    Column("doc", JSON, nullable=False),
)

tags = Table(
    "tags",
    metadata,
    Column("arn", String(512), primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("value", String(256), nullable=False),
)

iam_users = Table(
    "iam_users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("user_id", String(32), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

iam_access_keys = Table(
    "iam_access_keys",
    metadata,
    Column("access_key_id", String(32), primary_key=True),
    Column("user_name", String(64), nullable=False, index=True),
    Column("secret_enc", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("session_token_enc", Text, nullable=True),
    Column("expiration", DateTime(timezone=True), nullable=True),
)

iam_user_policies = Table(
    "iam_user_policies",
    metadata,
    Column("user_name", String(64), primary_key=True),
    Column("policy_name", String(128), primary_key=True),
    Column("kind", String(8), primary_key=True),  # "managed" | "inline"
    Column("document", JSON, nullable=True),
)

agent_commands = Table(
    "agent_commands",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("source_server_id", String(32), nullable=False, index=True),
    Column("type", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # PENDING | DELIVERED | SUCCEEDED | FAILED
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("result", JSON, nullable=True),
)

agent_metrics = Table(
    "agent_metrics",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("source_server_id", String(32), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("cpu_percent", Float, nullable=False),
    Column("memory_percent", Float, nullable=False),
)

agent_logs = Table(
    "agent_logs",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("source_server_id", String(32), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("line", Text, nullable=False),
)

replication_servers = Table(
    "replication_servers",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("config_key", String(256), nullable=False),
    Column("dedicated_to", String(32), nullable=True),
    Column("host", String(128), nullable=False),
    Column("port", Integer, nullable=False),
    Column("pid", Integer, nullable=True),
    Column("doc", JSON, nullable=False),
    UniqueConstraint("config_key", "dedicated_to", name="uq_replication_server_config"),
)

# Generic documents of other services (EC2 launch templates and instances), keyed by kind and ID.
documents = Table(
    "documents",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("parent", String(64), nullable=True, index=True),
    Column("doc", JSON, nullable=False),
)

# Counters behind the ``seq`` columns (``Store.next_seq``): one row per name, incremented in place.
sequences = Table(
    "sequences",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# The `rehost server` processes sharing this database (``rehost.db.cluster``): a row from start to exit.
control_plane_processes = Table(
    "control_plane_processes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("number", BigInteger, nullable=False, unique=True),  # its advisory lock's key on PostgreSQL
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("backend_pid", Integer, nullable=True),  # PostgreSQL: the session holding its locks
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
)

# Signed-in console browsers (``rehost.console.session``), so every process knows them and they
# outlive a restart. ``id`` is the SHA-256 of the session ID the cookie carries.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("access_key_id", String(32), nullable=False),
    Column("user_name", String(64), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("expires", Float, nullable=False, index=True),
    Column("flashes", JSON, nullable=False),
)


def migrate(conn: Connection, version: int) -> None:
    """Bring a database of schema ``version`` up to `SCHEMA_VERSION` (tables new since then already exist:
    ``metadata.create_all`` made them)."""
    if version < 2:
        if "owner" not in {c["name"] for c in inspect(conn).get_columns("jobs")}:
            conn.execute(text("ALTER TABLE jobs ADD COLUMN owner VARCHAR(64)"))
        counters = conn.execute(select(meta.c.key, meta.c.value).where(meta.c.key.like("seq:%"))).all()
        for key, value in counters:
            conn.execute(sequences.insert().values(name=key[len("seq:"):], value=int(value)))
        conn.execute(delete(meta).where(and_(meta.c.key.like("seq:%"))))
