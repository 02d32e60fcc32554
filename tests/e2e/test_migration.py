"""The hands-on migration end to end, on the smallest image that still boots and serves its site.

The same flow as `make demo` (rehost.demo.flow): a real Debian source VM on IDE/e1000, the installer
fetched from the control plane and run over ssh, replication until READY_FOR_TEST, right-sizing off and a
t3.micro launch template version as the default, a real test instance and a real cutover instance booted
from converted snapshots, each checked by fetching the site (including content written after the
initial sync), then finalize and archive.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from console.httpclient import ConsoleClient
from helpers import processes_with
from rehost.demo.flow import Demo
from rehost.images.builder import default_cache_dir

pytestmark = [pytest.mark.slow, pytest.mark.root]


@pytest.mark.timeout(3000)
def test_the_seed_migration_end_to_end(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices for the source image)")
    lines: list[str] = []
    seen_in_console: list[str] = []

    def console_shows_the_instance(demo: Demo, kind: str, instance_id: str, url: str) -> None:
        """The console's migration dashboard lists the launched instance with a link to its site."""
        console = ConsoleClient(f"http://127.0.0.1:{demo.cp_port}")
        assert console.sign_in(*demo.admin_key).status in (302, 303)
        page = console.get(f"/console/servers/{demo.server_id}?tab=dashboard").body
        assert instance_id in page
        assert url.rstrip("/").removeprefix("http://") in page
        seen_in_console.append(kind)

    demo = Demo(work_dir=tmp_path, flavor="minimal", size_gib=1.0, cache_dir=default_cache_dir(), out=lines.append,
                after_launch=console_shows_the_instance)
    failures = demo.run()
    print("\n".join(lines))
    assert failures == []
    passed = [s.name for s in demo.steps if s.ok]
    assert any("test instance" in name and "open the site" in name for name in passed)
    assert any("cutover instance" in name and "open the site" in name for name in passed)
    assert demo.steps[-1].name.startswith("Step 7: finalize")
    assert seen_in_console == ["test", "cutover"]
    # Nothing the demo started outlives it: no VM of this run is left running.
    assert [line for line in lines if line.startswith("cleanup: ") and "terminated" not in line] == []
    deadline = time.monotonic() + 30
    while processes_with("qemu-system", str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert list(processes_with("qemu-system", str(tmp_path))) == []
