"""What systemd sees: the unit files in contrib/systemd, the sd_notify messages of the real
`python -m uploadsrv` process, and that it runs under MemoryDenyWriteExecute=.

There is no systemd as PID 1 here, so the units are checked with `systemd-analyze`
(verify, and the offline security rating), and the notify protocol with a datagram
socket of the test's own that stands in for systemd's.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import FORM_CONTENT_TYPE, form, free_port, part, poll, request_head

UNITS = Path(__file__).parent.parent / "contrib" / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (Debian: apt-get install systemd)")
# The highest exposure `systemd-analyze security` may give uploadsrv.service (it gives
# 0.6 with systemd 252); on its scale 0.0-10.0, up to 1.9 is "SAFE". --threshold= counts
# in tenths.
MAX_EXPOSURE = 1.0


def units_for_verify(folder: Path) -> list[Path]:
    """Copies of both units whose ExecStart= runs this interpreter's `-m uploadsrv`.

    `systemd-analyze verify` fails when the ExecStart= binary does not exist, and the
    shipped path (/usr/local/bin/uploadsrv) exists only where it was pip-installed as
    root; everything else in the copies is the shipped text.
    """
    service = (UNITS / "uploadsrv.service").read_text()
    shipped = "ExecStart=/usr/local/bin/uploadsrv --config %d/config.toml\n"
    assert shipped in service
    (folder / "uploadsrv.service").write_text(
        service.replace(shipped, f"ExecStart={sys.executable} -m uploadsrv --config %d/config.toml\n"))
    shutil.copy(UNITS / "uploadsrv.socket", folder / "uploadsrv.socket")
    return [folder / "uploadsrv.service", folder / "uploadsrv.socket"]


@needs_analyze
def test_both_units_verify_without_a_diagnostic(tmp_path: Path) -> None:
    assert ANALYZE is not None
    # --man=no: no Documentation= pages to look up. Unknown keys and bad values are only
    # warnings (status 0), so the output must be empty too.
    result = subprocess.run([ANALYZE, "verify", "--man=no", *map(str, units_for_verify(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


@needs_analyze
def test_service_exposure_stays_safe(tmp_path: Path) -> None:
    assert ANALYZE is not None
    service = units_for_verify(tmp_path)[0]
    result = subprocess.run([ANALYZE, "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}",
                             "--no-pager", str(service)], capture_output=True, text=True, timeout=60)
    score = re.search(r"Overall exposure level for uploadsrv\.service: (\d+\.\d)", result.stdout)
    assert score, result.stdout + result.stderr
    assert result.returncode == 0, f"exposure {score.group(1)} > {MAX_EXPOSURE}:\n{result.stdout}"


def test_units_agree_on_the_drain_and_the_watchdog() -> None:
    service = (UNITS / "uploadsrv.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", service, re.MULTILINE))
    assert settings["Type"] == "notify"
    # The default shutdown_timeout is 30s: systemd must not kill the process mid-drain.
    assert int(settings["TimeoutStopSec"].removesuffix("s")) > 30
    assert settings["WatchdogSec"] == "30s"
    assert settings["LoadCredential"] == "config.toml:/etc/uploadsrv/config.toml"
    assert "ListenStream=127.0.0.1:8080" in (UNITS / "uploadsrv.socket").read_text()


# --- sd_notify ---------------------------------------------------------------------


class NotifyListener:
    """The datagram socket systemd would listen on; collects every message."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[tuple[float, list[str]]] = []

    def wait_for(self, wanted: Callable[[list[str]], bool], process: subprocess.Popen[bytes],
                 timeout: float = 10.0) -> list[str]:
        """Receive until a message (its lines) satisfies `wanted`; fail if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(0.2)
            try:
                lines = self.sock.recv(4096).decode().split("\n")
            except TimeoutError:
                if process.poll() is not None:
                    raise AssertionError(f"server exited with {process.returncode} while waiting") from None
                continue
            self.messages.append((time.monotonic(), lines))
            if wanted(lines):
                return lines
        raise AssertionError(f"no such message within {timeout} s; got {self.messages}")

    def lines(self) -> list[str]:
        return [line for _, lines in self.messages for line in lines]


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest) -> Iterator[NotifyListener]:
    # AF_UNIX paths are limited to 107 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sdn") as folder:
        address = f"{folder}/notify" if request.param == "path" else f"@uploadsrv-test-{os.getpid()}-{time.monotonic_ns()}"
        listen = NotifyListener(address)
        yield listen
        listen.sock.close()


def spawn(tmp_path: Path, listener: NotifyListener, port: int) -> subprocess.Popen[bytes]:
    config = tmp_path / "config.toml"
    config.write_text('[storage]\ndir = "files"\ntmp_dir = "tmp"\nmin_free_space = 0\n')
    env = dict(os.environ, NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="1000000")
    with open(tmp_path / "server.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "uploadsrv", "--config", str(config), "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)


def health(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        return int(json.load(response)["uploads_in_progress"])


def test_notify_ready_status_watchdog_and_stopping(tmp_path: Path, listener: NotifyListener, mp3: bytes) -> None:
    port = free_port()
    process = spawn(tmp_path, listener, port)
    try:
        ready = listener.wait_for(lambda lines: "READY=1" in lines, process, timeout=20)
        assert health(port) == 0  # READY=1 means serving: no retry needed
        assert "STATUS=serving; 0 uploads in progress" in ready

        # WATCHDOG_USEC=1s: a ping every 0.5 s, not a flood.
        first = len(listener.messages)
        listener.wait_for(lambda lines: sum("WATCHDOG=1" in m for _, m in listener.messages[first:]) >= 3, process)
        pings = [at for at, lines in listener.messages[first:] if "WATCHDOG=1" in lines]
        assert pings[-1] - pings[0] >= 0.8, pings

        # STATUS follows the uploads in progress.
        body = form(part("file", mp3 + os.urandom(1 << 20), filename="a.mp3"))
        head = request_head("POST", "/upload", {"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(len(body))})
        with socket.create_connection(("127.0.0.1", port)) as upload:
            upload.sendall(head + body[: len(mp3) + 1000])
            listener.wait_for(lambda lines: "STATUS=serving; 1 upload in progress" in lines, process)
        poll(lambda: health(port) == 0)
        listener.wait_for(lambda lines: "STATUS=serving; 0 uploads in progress" in lines, process)

        process.send_signal(signal.SIGTERM)
        stopping = listener.wait_for(lambda lines: "STOPPING=1" in lines, process)
        assert any(line.startswith("EXTEND_TIMEOUT_USEC=") for line in stopping)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    sent = listener.lines()
    assert sent.index("READY=1") < sent.index("STOPPING=1")


def test_no_ready_when_start_up_fails(tmp_path: Path, listener: NotifyListener) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = spawn(tmp_path, listener, taken.getsockname()[1])
        assert process.wait(timeout=30) == 1
    listener.sock.setblocking(False)
    try:
        received = listener.sock.recv(4096).decode()
    except BlockingIOError:
        received = ""
    assert "READY=1" not in received


# --- the unit's process rules: MemoryDenyWriteExecute= and SystemCallFilter= ----------
# Without systemd as PID 1 the unit cannot run here, so a launcher puts the same kernel
# rules on a child process and then execs the real server under them (both rules are
# inherited across exec): the kernel's PR_SET_MDWE (what MemoryDenyWriteExecute= does
# with seccomp: no mapping may become executable once writable), and a libseccomp
# allow-list built from `systemd-analyze syscall-filter` for the unit's exact
# SystemCallFilter= lines, refusing the rest with EPERM as SystemCallErrorNumber= does.

LAUNCHER = """
import ctypes, json, os, sys
rule, port, allowed = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
if rule == "mdwe":
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    assert libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())
else:
    seccomp = ctypes.CDLL("libseccomp.so.2")
    seccomp.seccomp_init.restype = ctypes.c_void_p
    seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
    seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    seccomp.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
    SCMP_ACT_ALLOW, SCMP_ACT_ERRNO_EPERM = 0x7FFF0000, 0x00050000 | 1
    context = seccomp.seccomp_init(SCMP_ACT_ERRNO_EPERM)
    for name in allowed:
        number = seccomp.seccomp_syscall_resolve_name(name.encode())
        if number >= 0:  # names of other architectures resolve to nothing here
            assert seccomp.seccomp_rule_add(context, SCMP_ACT_ALLOW, number, 0) == 0, name
    assert seccomp.seccomp_load(context) == 0  # also sets no_new_privs, as NoNewPrivileges= does
os.execv(sys.executable, [sys.executable, "-m", "uploadsrv", "--port", port])
"""


def _kernel_has_mdwe() -> bool:
    # Probe in a child: the flag cannot be cleared once set.
    probe = "import ctypes, sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"
    return subprocess.run([sys.executable, "-c", probe], timeout=30).returncode == 0


def _has_libseccomp() -> bool:
    try:
        ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return False
    return True


def syscall_groups() -> dict[str, list[str]]:
    """systemd's syscall groups, e.g. {"@system-service": ["@aio", ..., "fadvise64", ...]}."""
    assert ANALYZE is not None
    listing = subprocess.run([ANALYZE, "syscall-filter", "--no-pager"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for line in listing.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def allowed_syscalls() -> list[str]:
    """The unit's SystemCallFilter= lines, resolved: an allow-list, then '~' removals."""
    groups = syscall_groups()

    def expand(names: list[str]) -> set[str]:
        result: set[str] = set()
        for name in names:
            result |= expand(groups[name]) if name.startswith("@") else {name}
        return result

    lines = re.findall(r"^SystemCallFilter=(.*)$", (UNITS / "uploadsrv.service").read_text(), re.MULTILINE)
    assert lines and not lines[0].startswith("~"), "the first SystemCallFilter= line is the allow-list"
    allowed: set[str] = set()
    for line in lines:
        if line.startswith("~"):
            allowed -= expand(line[1:].split())
        else:
            allowed |= expand(line.split())
    assert "setrlimit" not in allowed and "read" in allowed  # the expansion did something
    return sorted(allowed)


@pytest.mark.parametrize("rule", [
    pytest.param("mdwe", marks=pytest.mark.skipif(not _kernel_has_mdwe(),
                                                  reason="kernel without PR_SET_MDWE (Linux 6.3+)")),
    pytest.param("syscalls", marks=pytest.mark.skipif(ANALYZE is None or not _has_libseccomp(),
                                                      reason="needs systemd-analyze and libseccomp.so.2")),
])
def test_serves_an_upload_and_stops_under_the_units_process_rules(tmp_path: Path, mp3: bytes, rule: str) -> None:
    port = free_port()
    allowed = json.dumps(allowed_syscalls() if rule == "syscalls" else [])
    with open(tmp_path / "server.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-c", LAUNCHER, rule, str(port), allowed],
                                   cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        def serving() -> bool:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                return health(port) == 0
            except OSError:
                return False

        poll(serving, timeout=20)
        body = form(part("file", mp3 + os.urandom(3 << 20), filename="a.mp3"))  # past one write batch
        head = request_head("POST", "/upload", {"Content-Type": FORM_CONTENT_TYPE, "Content-Length": str(len(body))})
        with socket.create_connection(("127.0.0.1", port), timeout=10) as upload:
            upload.sendall(head + body)
            answer = upload.recv(65536)
        assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log_text = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log_text and "Operation not permitted" not in log_text, log_text
