"""The control-plane schema, for SQLite and PostgreSQL alike.

Each record is a row with the columns queries filter or sort on and a JSON document (``doc``) holding the
rest of MGN's wide shapes. ``seq`` columns give a stable creation order for pagination.
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
)

SCHEMA_VERSION = 1

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
