"""Builds the one-file installer ``rehost-replication-installer-init``: a Python zipapp.

The file is ``#!/usr/bin/env python3`` followed by a zip of the ``rehost.agent`` package,
``rehost.errors`` and ``rehost.replication.protocol`` (all standard-library only, Python 3.8 syntax) and a
``__main__.py`` that calls `rehost.agent.__main__.main`. The same sources always give the same bytes
(fixed timestamps and order), so the control plane can cache and checksum it.

``python -m rehost.agent.bundle OUTPUT`` writes it (what ``make`` installs as
``.venv/bin/rehost-replication-installer-init``).
"""

from __future__ import annotations

import io
import os
import sys
import zipfile
from pathlib import Path

SHEBANG = b"#!/usr/bin/env python3\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)
_MAIN = (
    "import sys\n"
    "if sys.version_info < (3, 8):\n"
    "    sys.exit('rehost-replication-installer-init needs Python 3.8 or newer')\n"
    "from rehost.agent.__main__ import main\n"
    "sys.exit(main())\n"
)
# The replication package's own __init__ may import server-side modules; the agent needs none of them.
_REPLICATION_INIT = '"""rehost.replication, as carried by the agent: only the wire protocol."""\n'


def _sources() -> dict[str, bytes]:
    """Archive name -> bytes, for every file of the bundle."""
    rehost_dir = Path(__file__).resolve().parent.parent
    files: dict[str, bytes] = {"__main__.py": _MAIN.encode()}
    files["rehost/__init__.py"] = (rehost_dir / "__init__.py").read_bytes()
    files["rehost/errors.py"] = (rehost_dir / "errors.py").read_bytes()
    files["rehost/fsutil.py"] = (rehost_dir / "fsutil.py").read_bytes()
    files["rehost/replication/__init__.py"] = _REPLICATION_INIT.encode()
    files["rehost/replication/protocol.py"] = (rehost_dir / "replication" / "protocol.py").read_bytes()
    for path in sorted((rehost_dir / "agent").glob("*.py")):
        files[f"rehost/agent/{path.name}"] = path.read_bytes()
    return files


def installer_bytes() -> bytes:
    """The installer's bytes (deterministic for the same sources)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in sorted(_sources().items()):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # Unix, whatever builds it
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return SHEBANG + buf.getvalue()


def build_installer(output_path: str | os.PathLike[str]) -> Path:
    """Write the installer to `output_path` (atomically, mode 0755) and return its path."""
    out = Path(output_path)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.write_bytes(installer_bytes())
    tmp.chmod(0o755)
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m rehost.agent.bundle OUTPUT")
    print(build_installer(sys.argv[1]))
