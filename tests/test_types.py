"""The package's type hints hold: mypy checks `uploadsrv/` as the test suite runs.

Owns only that check. Third-party packages without hints are taken as they are
(`--ignore-missing-imports`); the cache lives in the test's temporary folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_type_checks(tmp_path: Path) -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--cache-dir", str(tmp_path / "cache"),
         "uploadsrv"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Success" in checked.stdout
