#!/usr/bin/env python3
"""The project's two entry points on a machine that has only python3.

    python3 dev.py serve [uploadsrv args...]   start the server (defaults, or ./config.toml)
    python3 dev.py test  [pytest args...]      run the test suite

Each creates ./.venv on first use and reinstalls the package whenever setup.cfg or
pyproject.toml changed, so both commands stay true on a fresh clone.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".uploadsrv-installed"


def _requirements_digest() -> str:
    digest = hashlib.sha256()
    for name in ("setup.cfg", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> Path:
    """Create or refresh the virtual environment; return its python."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print("dev.py: creating .venv", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    wanted = _requirements_digest()
    if not STAMP.exists() or STAMP.read_text() != wanted:
        print("dev.py: installing uploadsrv and its test dependencies into .venv", file=sys.stderr)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-e", f"{ROOT}[test]"],
            check=True,
        )
        STAMP.write_text(wanted)
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("serve", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    python = ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "serve":
        args = [str(python), "-m", "uploadsrv", *rest]
    else:
        args = [str(python), "-m", "pytest", *rest]
    os.chdir(ROOT)
    os.execv(args[0], args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
