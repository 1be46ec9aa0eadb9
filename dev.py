#!/usr/bin/env python3
"""The project's two entry points on a machine that has only python3.

    python3 dev.py serve [uploadsrv args...]   start the server (defaults, or ./config.toml)
    python3 dev.py test  [pytest args...]      run the test suite

Each creates ./.venv on first use and reinstalls the package whenever setup.cfg or
pyproject.toml changed, so both commands stay true on a fresh clone.

`test` also installs the system tools some tests drive (curl, systemd-analyze,
systemd-socket-activate, nginx, chromium, chromedriver, redis-server) when one is
missing, the machine has apt-get and dev.py runs as root. It never fails the run for
them: it prints one line naming what is still missing, and the tests that need it skip
with a reason. UPLOADSRV_NO_SYSTEM_PACKAGES=1 turns this off.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".uploadsrv-installed"
SYSTEM_STAMP = VENV / ".uploadsrv-system-packages"

# command the tests run -> the Debian package that ships it
SYSTEM_TOOLS = {
    "curl": "curl",
    "systemd-analyze": "systemd",
    "systemd-socket-activate": "systemd",
    "nginx": "nginx",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "redis-server": "redis-server",
}
# Outside root's PATH (a non-root user's PATH often lacks /usr/sbin).
SBIN = Path("/usr/sbin")
APT_UPDATE_TIMEOUT = 300
APT_INSTALL_TIMEOUT = 1200
# After a failed install (offline machine, broken mirror) the same tools are not tried
# again for this long, so every test run does not wait out apt's timeouts.
RETRY_FAILED_AFTER = 6 * 3600
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


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


def missing_tools() -> list[str]:
    """The commands in SYSTEM_TOOLS that are not installed (cheap: no apt involved)."""
    return [tool for tool in SYSTEM_TOOLS
            if shutil.which(tool) is None and not (SBIN / tool).is_file()]


def ensure_system_tools() -> None:
    """Install missing test tools with apt-get where possible; never raises, never exits."""
    missing = missing_tools()
    if not missing or os.environ.get("UPLOADSRV_NO_SYSTEM_PACKAGES") == "1":
        return
    packages = sorted({SYSTEM_TOOLS[tool] for tool in missing})
    why = _cannot_install(packages)
    if why is None:
        print(f"dev.py: installing system packages for the tests: {' '.join(packages)}", file=sys.stderr)
        why = _apt_install(packages)
        _remember(packages, why)
        missing = missing_tools()
        if why is None and missing:
            why = "apt-get succeeded but they are still not on PATH"
    if missing:
        print(f"dev.py: not installed: {', '.join(missing)} ({why}); the tests that need them skip",
              file=sys.stderr)


def _cannot_install(packages: list[str]) -> str | None:
    """Why apt-get will not be tried now, or None."""
    if shutil.which("apt-get") is None:
        return "no apt-get here; install them with the system's package manager"
    if os.geteuid() != 0:
        return f"not root; run: sudo apt-get install {' '.join(packages)}"
    try:
        last = json.loads(SYSTEM_STAMP.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(last, dict) and last.get("failed") == packages and time.time() - last.get("at", 0) < RETRY_FAILED_AFTER:
        return f"apt-get failed for them at {time.ctime(last['at'])}; delete {SYSTEM_STAMP} to retry now"
    return None


def _apt_install(packages: list[str]) -> str | None:
    """Run apt-get update and install; return None on success, else why it failed."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait_for_lock = ["-o", "DPkg::Lock::Timeout=120"]  # another apt run finishes first
    steps = [(["apt-get", "update", "-qq", *wait_for_lock], APT_UPDATE_TIMEOUT),
             (["apt-get", "install", "-y", "-qq", "--no-install-recommends", *wait_for_lock, *packages],
              APT_INSTALL_TIMEOUT)]
    # The tests start their own nginx and redis on loopback ports; a package's postinst
    # must not start system-wide ones on :80 and :6379. policy-rc.d exit 101 = "do not
    # start services" (Debian's invoke-rc.d contract); Docker images ship one already.
    own_policy = not POLICY_RC_D.exists()
    try:
        if own_policy:
            POLICY_RC_D.write_text("#!/bin/sh\n# written by uploadsrv's dev.py during apt-get install\nexit 101\n")
            POLICY_RC_D.chmod(0o755)
        for command, timeout in steps:
            result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True, timeout=timeout)
            if result.returncode != 0:
                last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
                return f"apt-get {command[1]} exited with {result.returncode}: {last_line}"
    except subprocess.TimeoutExpired as error:
        return f"apt-get {error.cmd[1]} took over {error.timeout:.0f} s"
    except OSError as error:
        return f"apt-get could not run: {error}"
    finally:
        if own_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    return None


def _remember(packages: list[str], failure: str | None) -> None:
    """Record the outcome in .venv, so a failed install is not retried on every run."""
    outcome = {"installed": packages} if failure is None else {"failed": packages, "why": failure}
    SYSTEM_STAMP.write_text(json.dumps({**outcome, "at": time.time()}) + "\n")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("serve", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    python = ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "serve":
        args = [str(python), "-m", "uploadsrv", *rest]
    else:
        ensure_system_tools()
        args = [str(python), "-m", "pytest", *rest]
    os.chdir(ROOT)
    os.execv(args[0], args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
