"""IMPLEMENTATION_COVERAGE.md is generated from botocore's model and the services: it must be current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_coverage_document_is_current() -> None:
    generated = subprocess.run([sys.executable, str(ROOT / "scripts" / "implementation_coverage.py")],
                               capture_output=True, text=True, check=True).stdout
    assert generated == (ROOT / "IMPLEMENTATION_COVERAGE.md").read_text(), "run `make coverage-doc`"
    assert "- [x] StartTest" in generated and "- [x] CreateLaunchTemplateVersion" in generated
