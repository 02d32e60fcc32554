"""The rehost replication agent and its installer.

Runs on the source machine with Python 3.8+ and the standard library alone (xxhash, zstandard and lz4 are
used when importable). Shipped as one file, ``rehost-replication-installer-init`` (a zipapp built by
`rehost.agent.bundle.build_installer`), which carries this package, ``rehost.errors`` and
``rehost.replication.protocol``.
"""

from __future__ import annotations

AGENT_VERSION = "0.1.0"
