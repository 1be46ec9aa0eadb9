"""The upload page (`GET /`, `uploadsrv/static/`): what the server sends, and the page
itself in headless Chromium (Selenium) against the real `python -m uploadsrv` process.

Browser tests need Debian's `chromium` and `chromium-driver` (/usr/bin/chromium,
/usr/bin/chromedriver); without them they are skipped and say why. The server runs as a
process (not on the test's event loop) because Selenium's calls block, and because the
resume test kills it mid-upload and starts it again on the same port and storage.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import ServerProcess, poll, start_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "page-test-token"
MiB = 1024 * 1024


class By:
    """Selenium's locator names (plain strings), so this module imports without Selenium."""

    ID = "id"
    CSS_SELECTOR = "css selector"


# --- what the server sends (no browser) ------------------------------------------------

async def test_page_loads_only_files_this_server_ships(start) -> None:
    server = await start()
    response = await server.client.get("/")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    page = await response.text()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources == ["data:,", "/static/tus.min.js", "/static/app.js"]  # data:, no favicon request
    sources.remove("data:,")
    for source in sources:
        script = await server.client.get(source)
        assert script.status == 200, source
        assert "javascript" in script.headers["Content-Type"]
        assert len(await script.read()) > 1000


async def test_vendored_tus_client_carries_its_license_and_version(start) -> None:
    server = await start()
    text = await (await server.client.get("/static/tus.min.js")).text()
    head = text[:2000]
    assert "tus-js-client 4.3.1" in head and "The MIT License (MIT)" in head
    assert "//# sourceMappingURL" not in text  # the map is not shipped


@pytest.mark.parametrize("path", ["/static/index.html", "/static/nope.js", "/static/..%2Fpage.py",
                                  "/static/../app.py"])
async def test_static_serves_only_its_listed_files(start, path: str) -> None:
    server = await start()
    response = await server.client.get(path)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_page_and_scripts_need_no_token(start) -> None:
    server = await start(auth={"tokens": [TOKEN]})
    for path in ("/", "/static/app.js", "/static/tus.min.js"):
        assert (await server.client.get(path)).status == 200, path
    assert (await server.client.get("/files")).status == 401


# --- the page in Chromium --------------------------------------------------------------

@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("browser tests need Debian's chromium and chromium-driver "
                    "(/usr/bin/chromium, /usr/bin/chromedriver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # Without these Chromium reaches for the network (updates, sync, QUIC probes).
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1100,1000"):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="uploadsrv-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        browser = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        browser.implicitly_wait(0)
        try:
            yield browser
        finally:
            browser.quit()


def _write_config(folder: Path, **sections: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ['[storage]', 'dir = "files"', 'tmp_dir = "tmp"', 'min_free_space = 0']
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _stop(server: ServerProcess) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Start the real server with a config in tmp_path; stopped at the end of the test."""
    started: list[ServerProcess] = []

    def factory(**sections: dict[str, Any]) -> ServerProcess:
        server = start_process(_write_config(tmp_path / "run", **sections), tmp_path / "run")
        started.append(server)
        return server

    yield factory
    for server in started:
        _stop(server)


def _media_file(folder: Path, sample: Path, size: int, name: str = "recording.mp3") -> Path:
    """A real mp3 padded with random bytes to `size` (the type is decided by its head)."""
    head = sample.read_bytes()
    path = folder / name
    path.write_bytes(head + os.urandom(size - len(head)))
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _http(server: ServerProcess, path: str, method: str = "GET", token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(server.url + path, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _open_page(driver: Any, server: ServerProcess) -> None:
    driver.get(server.url + "/")
    poll(lambda: driver.execute_script("return document.readyState") == "complete")


def _item(driver: Any, filename: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, f'li.item[data-filename="{filename}"]')


def _wait_state(driver: Any, filename: str, states: set[str], timeout: float = 20) -> str:
    """Wait until the file's item reaches one of `states`; return the state."""
    def reached() -> bool:
        found = driver.execute_script(
            "const n = document.querySelector(`li.item[data-filename='${arguments[0]}']`);"
            "return n ? n.dataset.state : null;", filename)
        return found in states
    poll(reached, timeout=timeout, interval=0.05)
    return str(_item(driver, filename).get_attribute("data-state"))


def _record_shown(driver: Any, filename: str) -> dict[str, str]:
    item = _item(driver, filename)
    terms = [dt.text for dt in item.find_elements(By.CSS_SELECTOR, "dl.record dt")]
    values = [dd.text for dd in item.find_elements(By.CSS_SELECTOR, "dl.record dd")]
    return dict(zip(terms, values))


def _pick(driver: Any, *paths: Path) -> None:
    driver.find_element(By.ID, "picker").send_keys("\n".join(str(path) for path in paths))


def test_uploaded_files_show_their_record_with_the_right_sha256(driver, serve, media_samples, tmp_path) -> None:
    server = serve()
    first = _media_file(tmp_path, media_samples["mp3_id3"], 3 * MiB + 17, "first take.mp3")
    second = _media_file(tmp_path, media_samples["mp3_no_id3"], 2 * MiB, "second.mp3")
    _open_page(driver, server)
    _pick(driver, first, second)
    for path in (first, second):
        assert _wait_state(driver, path.name, {"done", "error"}) == "done", _item(driver, path.name).text
        shown = _record_shown(driver, path.name)
        assert shown["SHA-256"] == _sha256(path)
        assert shown["Name"] == path.name and shown["Type"] == "mp3 (audio/mpeg)"
        assert f"({path.stat().st_size:,} bytes)" in shown["Size"]
        file_id = shown["Link"].split("/files/")[1]
        status, body = _http(server, f"/files/{file_id}/info")
        assert status == 200 and json.loads(body)["sha256"] == _sha256(path)
    # Both appear in the recent list, fetched again after each upload.
    poll(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#recent-rows tr")) == 2)
    driver.save_screenshot("/tmp/page.png")


def test_dropped_file_is_uploaded(driver, serve, media_samples) -> None:
    server = serve()
    sample = media_samples["mp3_id3"]
    _open_page(driver, server)
    # A real drop cannot be made from WebDriver; this is the event a browser dispatches.
    driver.execute_script(
        "const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));"
        "const data = new DataTransfer();"
        "data.items.add(new File([bytes], 'dropped.mp3', {type: 'audio/mpeg'}));"
        "document.getElementById('drop').dispatchEvent("
        "  new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));",
        base64.b64encode(sample.read_bytes()).decode())
    assert _wait_state(driver, "dropped.mp3", {"done", "error"}) == "done", _item(driver, "dropped.mp3").text
    assert _record_shown(driver, "dropped.mp3")["SHA-256"] == _sha256(sample)


def test_refused_file_shows_the_servers_message_and_a_failed_state(driver, serve, tmp_path) -> None:
    server = serve()
    impostor = tmp_path / "x.mp3"
    impostor.write_bytes(os.urandom(300 * 1024))
    _open_page(driver, server)
    _pick(driver, impostor)
    assert _wait_state(driver, "x.mp3", {"done", "error"}) == "error"
    item = _item(driver, "x.mp3")
    status = item.find_element(By.CSS_SELECTOR, ".status").text
    assert status.startswith("Failed: ") and "mp3" in status  # the server's own sentence
    assert "answered 415" not in status
    assert not item.find_element(By.CSS_SELECTOR, "progress").is_displayed()
    assert json.loads(_http(server, "/files")[1])["files"] == []
    # Refused once, not retried: a retry would have created the upload again.
    log = server.log.read_text()
    access = [line for line in log.splitlines() if "aiohttp.access" in line]
    assert (sum(": POST /files/ " in line for line in access),
            sum(": PATCH /files/" in line for line in access)) == (1, 1), log


def _start_on_port(config: Path, cwd: Path, port: int) -> ServerProcess:
    """The server again on a given port (support.start_process always picks a free one)."""
    cwd.mkdir()
    log = cwd / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "uploadsrv", "--config", str(config), "--port", str(port)],
                                   cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    server = ServerProcess(process, port, log)

    def healthy() -> bool:
        assert process.poll() is None, f"server exited with {process.returncode}: {log.read_text()}"
        try:
            return _http(server, "/health")[0] == 200
        except OSError:
            return False

    try:
        poll(healthy, timeout=20)
    except AssertionError:
        process.kill()
        process.wait(timeout=10)
        raise
    return server


def _throttle(driver: Any, upload_bytes_per_second: int | None) -> None:
    """Limit the tab's upload speed (None: no limit), so a test can act mid-upload."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1,
        "uploadThroughput": upload_bytes_per_second or -1,
    })


def _percent(driver: Any, filename: str) -> float:
    return float(driver.execute_script(
        "const n = document.querySelector(`li.item[data-filename='${arguments[0]}'] progress`);"
        "return n ? n.value : 0;", filename))


def _tus_offset(server: ServerProcess, upload_url: str) -> int:
    request = urllib.request.Request(upload_url, method="HEAD", headers={"Tus-Resumable": "1.0.0"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.headers["Upload-Offset"])


def test_upload_resumes_after_the_server_is_killed_and_restarted(driver, media_samples, tmp_path) -> None:
    config = _write_config(tmp_path / "run")
    server = start_process(config, tmp_path / "run")
    restarted: ServerProcess | None = None
    path = _media_file(tmp_path, media_samples["mp3_id3"], 24 * MiB, "long take.mp3")
    try:
        _open_page(driver, server)
        _throttle(driver, 8 * MiB)
        _pick(driver, path)
        # Past the first 8 MiB chunk, so the server has acknowledged bytes to keep.
        poll(lambda: _percent(driver, path.name) > 45, timeout=15, interval=0.05)
        status = _item(driver, path.name).find_element(By.CSS_SELECTOR, ".status")
        assert re.fullmatch(r"\d+% · [\d.]+ MiB of 24.0 MiB · [\d.]+ MiB/s · \d+ s left", status.text), status.text
        upload_url = _item(driver, path.name).get_attribute("data-upload-url")
        assert upload_url and upload_url.startswith(server.url + "/files/")
        server.process.kill()  # a crash, not a clean stop
        server.process.wait(timeout=10)
        poll(lambda: status.text.startswith("Connection lost; trying again"))
        _throttle(driver, None)  # the rest may go at full speed
        restarted = _start_on_port(config, tmp_path / "again", server.port)
        assert _tus_offset(restarted, upload_url) >= 8 * MiB  # what was acknowledged survived
        assert _wait_state(driver, path.name, {"done", "error"}, timeout=40) == "done", _item(driver, path.name).text
        shown = _record_shown(driver, path.name)
        assert shown["SHA-256"] == _sha256(path)
        # The same upload finished: resumed, not started over under a new id.
        assert shown["Link"].endswith(upload_url.rsplit("/", 1)[1])
    finally:
        _throttle(driver, None)
        server.process.kill()
        server.process.wait(timeout=10)
        if restarted is not None:
            _stop(restarted)


def test_cancel_stops_the_upload_and_deletes_it_on_the_server(driver, serve, media_samples, tmp_path) -> None:
    server = serve()
    path = _media_file(tmp_path, media_samples["mp3_id3"], 24 * MiB, "unwanted.mp3")
    try:
        _open_page(driver, server)
        _throttle(driver, 8 * MiB)
        _pick(driver, path)
        poll(lambda: _percent(driver, path.name) > 10, timeout=15, interval=0.05)
        upload_id = str(_item(driver, path.name).get_attribute("data-upload-url")).rsplit("/", 1)[1]
        cancel = f'button[aria-label="Cancel the upload of {path.name}"]'  # the label a screen reader reads
        _item(driver, path.name).find_element(By.CSS_SELECTOR, cancel).click()
        assert _wait_state(driver, path.name, {"cancelled"}) == "cancelled"
    finally:
        _throttle(driver, None)
    assert not _item(driver, path.name).find_element(By.CSS_SELECTOR, "progress").is_displayed()
    assert _http(server, f"/files/{upload_id}", method="HEAD")[0] == 404
    poll(lambda: not list((tmp_path / "run" / "tmp").glob("*.part")))
    assert json.loads(_http(server, "/files")[1])["files"] == []


def test_reloaded_page_resumes_the_upload_when_the_file_is_picked_again(driver, serve, media_samples,
                                                                         tmp_path) -> None:
    server = serve()
    path = _media_file(tmp_path, media_samples["mp3_id3"], 24 * MiB, "interrupted.mp3")
    try:
        _open_page(driver, server)
        _throttle(driver, 8 * MiB)
        _pick(driver, path)
        poll(lambda: _percent(driver, path.name) > 45, timeout=15, interval=0.05)
        upload_url = _item(driver, path.name).get_attribute("data-upload-url")
        _throttle(driver, None)
        _open_page(driver, server)  # a reload: the page forgets everything but localStorage
        unfinished = driver.find_element(By.ID, "unfinished")
        poll(lambda: unfinished.is_displayed() and path.name in unfinished.text)
        poll(lambda: _tus_offset(server, upload_url) >= 8 * MiB)
        _pick(driver, path)
        assert _wait_state(driver, path.name, {"done", "error"}) == "done", _item(driver, path.name).text
        shown = _record_shown(driver, path.name)
        assert shown["SHA-256"] == _sha256(path)
        assert shown["Link"].endswith(upload_url.rsplit("/", 1)[1])  # the same upload, resumed
        assert not unfinished.is_displayed()
    finally:
        _throttle(driver, None)


def test_with_tokens_the_page_uploads_opens_and_deletes_with_the_token(driver, serve, media_samples,
                                                                       tmp_path) -> None:
    server = serve(auth={"tokens": [TOKEN]})
    path = _media_file(tmp_path, media_samples["mp3_id3"], 1 * MiB, "private.mp3")
    _open_page(driver, server)
    auth = driver.find_element(By.ID, "auth")
    poll(auth.is_displayed)  # the page asked for the list, got 401, and asks for the token
    poll(lambda: "access token" in driver.find_element(By.ID, "recent-message").text)
    _pick(driver, path)  # before the token is in: refused, and can be tried again
    assert _wait_state(driver, path.name, {"done", "error"}) == "error"
    assert "needs an access token" in _item(driver, path.name).text
    field = driver.find_element(By.ID, "token")
    use_token = driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]")
    field.send_keys("not-the-token")
    use_token.click()
    poll(lambda: "not valid" in driver.find_element(By.ID, "recent-message").text)  # the server's word
    field.clear()
    field.send_keys(TOKEN)
    use_token.click()
    poll(lambda: driver.find_element(By.ID, "recent-message").text == "No files yet.")
    assert driver.execute_script("return sessionStorage.getItem('uploadsrv-token')") == TOKEN
    try_again = f'button[aria-label="Try the upload of {path.name} again"]'
    _item(driver, path.name).find_element(By.CSS_SELECTOR, try_again).click()
    assert _wait_state(driver, path.name, {"done", "error"}) == "done", _item(driver, path.name).text
    file_id = _record_shown(driver, path.name)["Link"].split("/files/")[1]

    # Open fetches the file with the token and shows it from a blob: no raw 401 page.
    page = driver.current_window_handle
    before = set(driver.window_handles)
    _item(driver, path.name).find_element(By.CSS_SELECTOR, "a.open").click()
    poll(lambda: len(driver.window_handles) > len(before))
    driver.switch_to.window((set(driver.window_handles) - before).pop())
    try:
        poll(lambda: driver.current_url.startswith("blob:"))
        digest = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(location.href).then(r => r.arrayBuffer()).then(b => crypto.subtle.digest('SHA-256', b))"
            ".then(d => done(Array.from(new Uint8Array(d), x => x.toString(16).padStart(2, '0')).join('')),"
            "      e => done(String(e)));")
        assert digest == _sha256(path)
        # Chromium plays it as media (the page's policy lets it load the blob), not as text.
        media = "document.querySelector('video')"
        assert driver.execute_script(f"return {media}.querySelector('source').src") == driver.current_url
        poll(lambda: driver.execute_script(f"return {media}.readyState >= 1 || {media}.error !== null"))
        assert driver.execute_script(f"return {media}.error") is None
    finally:
        driver.close()
        driver.switch_to.window(page)

    # Delete from the recent list, with the token.
    row = f'#recent-rows tr[data-id="{file_id}"]'
    poll(lambda: bool(driver.find_elements(By.CSS_SELECTOR, row)))
    driver.find_element(By.CSS_SELECTOR, row + " button.delete").click()
    driver.switch_to.alert.accept()
    poll(lambda: not driver.find_elements(By.CSS_SELECTOR, row))
    assert _http(server, f"/files/{file_id}/info", token=TOKEN)[0] == 404
    # The token outlives a reload of the tab (sessionStorage).
    _open_page(driver, server)
    assert driver.find_element(By.ID, "token").get_attribute("value") == TOKEN
    poll(lambda: driver.find_element(By.ID, "recent-message").text == "No files yet.")
