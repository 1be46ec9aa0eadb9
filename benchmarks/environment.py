"""The benchmark's own virtual environment, benchmarks/.venv.

Owns creating it, installing the peers' packages (requirements.txt) and uploadsrv
(editable, from the repository root) into it, and re-executing run.py inside it.
Standard library only: this module runs under whatever python3 the machine has.
It must not touch anything outside benchmarks/.venv.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
VENV = BENCH_DIR / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
UPLOADSRV_BIN = VENV / "bin" / "uploadsrv"
REQUIREMENTS = BENCH_DIR / "requirements.txt"
# Anything big the benchmark keeps between runs lives inside the ignored venv folder.
CACHE_DIR = VENV / "cache"
# One stamp per install step, holding the digest of the files that step depends on,
# so a changed requirements.txt or setup.cfg reinstalls and an unchanged one is free.
PEERS_STAMP = VENV / ".bench-peers-installed"
UPLOADSRV_STAMP = VENV / ".bench-uploadsrv-installed"
UPLOADSRV_INSTALL_LOG = VENV / "uploadsrv-install.log"
REEXEC_MARKER = "UPLOADSRV_BENCH_IN_VENV"


def _digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes() if path.exists() else b"<missing>")
    return digest.hexdigest()


def _pip(*args: str, log: Path | None = None) -> bool:
    command = [str(VENV_PYTHON), "-m", "pip", "install", "--quiet",
               "--disable-pip-version-check", *args]
    if log is None:
        return subprocess.run(command).returncode == 0
    with log.open("w") as out:
        return subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode == 0


def ensure_venv() -> None:
    """Create or refresh benchmarks/.venv; a failed uploadsrv install is not fatal."""
    if not VENV_PYTHON.exists():
        print("bench: creating benchmarks/.venv", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    wanted = _digest(REQUIREMENTS)
    if not PEERS_STAMP.exists() or PEERS_STAMP.read_text() != wanted:
        print("bench: installing the peers' packages into benchmarks/.venv", file=sys.stderr)
        if not _pip("-r", str(REQUIREMENTS)):
            raise SystemExit("bench: pip could not install benchmarks/requirements.txt")
        PEERS_STAMP.write_text(wanted)
    # uploadsrv is being written while this benchmark exists, so its install may fail
    # (no package yet, a broken setup.cfg); then the column says "not available".
    wanted = _digest(REPO_ROOT / "setup.cfg", REPO_ROOT / "pyproject.toml")
    if not UPLOADSRV_STAMP.exists() or UPLOADSRV_STAMP.read_text() != wanted:
        print("bench: installing uploadsrv (editable) into benchmarks/.venv", file=sys.stderr)
        if _pip("-e", str(REPO_ROOT), log=UPLOADSRV_INSTALL_LOG):
            UPLOADSRV_STAMP.write_text(wanted)
        else:
            print(f"bench: uploadsrv did not install; see {UPLOADSRV_INSTALL_LOG}",
                  file=sys.stderr)


def in_bench_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def reexec_in_venv(script: Path, argv: list[str]) -> None:
    """Replace this process with the same script run by the venv's python."""
    if os.environ.get(REEXEC_MARKER):
        # A second hop would mean the venv python does not report the venv as its
        # prefix; stop rather than loop.
        raise SystemExit(f"bench: re-executed but sys.prefix is {sys.prefix}, not {VENV}")
    os.environ[REEXEC_MARKER] = "1"
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(script), *argv])


def uploadsrv_install_problem() -> str | None:
    """Why uploadsrv cannot be started from the venv, or None when its CLI is there."""
    if not UPLOADSRV_BIN.exists():
        return "not installed in benchmarks/.venv (see benchmarks/.venv/uploadsrv-install.log)"
    return None
