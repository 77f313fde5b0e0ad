"""The console page end to end, in a real headless Chromium.

A real ``sagalog worker`` runs the shop workflows (tests/console/shop_workflows.py)
on a SQLite journal, and a real ``sagalog dashboard`` serves the page and the
API on it with a token. Selenium drives Debian's chromium through chromedriver
(tools/browser.py finds them, or installs them with apt-get when we are root;
elsewhere the test is skipped and says why).

The test is what an operator does: give the token, filter the list, open a
compensated saga and read its timeline (compensations after the steps, newest
first), move the state slider back to version 1 and forward again, then cancel
a running saga with the button and its confirmation. The journal must then say
the instance was cancelled, by the token's owner. Screenshots of the list, the
timeline and the confirmation go to ``$SAGALOG_ARTIFACTS`` (default: a pytest
temporary directory); docs/img/ holds copies for docs/dashboard.md.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from sagalog.replay.events import decode_event
from sagalog.storage import connect

HERE = Path(__file__).resolve().parent
TOOLS = HERE.parents[1] / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

import browser as browser_tool  # noqa: E402  (tools/ is not a package)

pytestmark = pytest.mark.slow

TOKEN = "s3cret-for-the-browser-test"
ACTOR = "alice"
WAIT = 30.0
"""Seconds to wait for something that happens in a few hundred milliseconds on a quiet machine."""


# -- processes --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, check: Any, timeout: float = WAIT) -> Any:
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class Console:
    """The worker and dashboard processes on one journal."""

    db: str
    url: str

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def status(self, instance_id: str) -> str:
        return str(self.get(f"/api/instances/{instance_id}")["status"])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-P", "-m", "sagalog", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes], log: Path) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    sys.stderr.write(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    """``sagalog worker shop_workflows`` and ``sagalog dashboard`` on one SQLite journal."""
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(HERE), "SAGALOG_DB": db}
    worker_log, dashboard_log = tmp_path / "worker.log", tmp_path / "dashboard.log"
    worker = spawn(["worker", "shop_workflows", "--worker-id", "browser-test"], worker_log, env)
    dashboard = spawn(["dashboard", "--db", db, "--port", str(port), "--token", f"{ACTOR}={TOKEN}"],
                      dashboard_log, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until("the dashboard to answer", lambda: answers(url) or dashboard.poll() is not None)
        assert dashboard.poll() is None, "the dashboard exited at start (see its log below)"
        yield Console(db, url)
    finally:
        stop(dashboard, dashboard_log)
        stop(worker, worker_log)


# -- the browser ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> browser_tool.Browser:
    """Chromium and chromedriver, installed once per machine when missing (root + apt-get)."""
    try:
        return browser_tool.ensure()
    except browser_tool.BrowserUnavailable as exc:
        pytest.skip(f"no headless browser for the console test: {exc}")
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"installing chromium with apt-get failed: {exc}")


@pytest.fixture
def driver(chromium: browser_tool.Browser, tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium session, with the page's console messages kept for the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium.chromium
    for flag in (*browser_tool.FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
                 "--window-size=1280,860", "--lang=en-GB"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(chromium.chromedriver))
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``$SAGALOG_ARTIFACTS`` or a pytest temporary directory."""
    given = os.environ.get("SAGALOG_ARTIFACTS")
    path = Path(given) if given else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshot(driver: Any, path: Path) -> None:
    """Save the whole page (the window grows to the page's height first)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(860, min(int(height) + 20, 2400)))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 860)


# -- helpers for the page --------------------------------------------------------------


def by_testid(testid: str) -> tuple[str, str]:
    return ("css selector", f'[data-testid="{testid}"]')


def texts(driver: Any, selector: str) -> list[str]:
    return [e.text for e in driver.find_elements("css selector", selector)]


# -- the journal -----------------------------------------------------------------------


def start_orders(db: str) -> None:
    """Three orders that complete, one that compensates, one that waits for approval."""
    from sagalog.engine import SyncClient

    with SyncClient(db, modules=["shop_workflows"]) as client:
        for n in (1001, 1002, 1003):
            client.start("shop.place_order", {"id": f"A-{n}", "items": 2}, id=f"order-{n}")
        client.start("shop.place_order", {"id": "A-1004", "items": 1, "boxes": 0}, id="order-1004")
        client.start("shop.hold_order", {"id": "A-1005", "items": 5}, id="order-1005")


def journal_events(db: str, instance_id: str) -> list[tuple[str, dict[str, Any], Any]]:
    """(type, metadata, decoded event) of each event of an instance."""

    async def read() -> list[tuple[str, dict[str, Any], Any]]:
        journal = await connect(db)
        try:
            stored = await journal.read_stream(f"wf-{instance_id}")
            return [(e.type, dict(e.metadata), decode_event(e)) for e in stored]
        finally:
            await journal.close()

    return anyio.run(read)


# -- the test ----------------------------------------------------------------------------


def test_operator_opens_a_compensated_saga_and_cancels_a_running_one(
    console: Console, driver: Any, artifacts: Path
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    start_orders(console.db)
    wait_until("the orders to settle", lambda: console.status("order-1004") == "compensated"
               and all(console.status(f"order-{n}") == "completed" for n in (1001, 1002, 1003)))
    wait_until("order-1005 to wait for its signal",
               lambda: console.get("/api/instances/order-1005")["state"]["waits"])
    # Live refresh redraws what changed: an element found a moment ago may be gone; look again.
    until = WebDriverWait(driver, WAIT, ignored_exceptions=[StaleElementReferenceException]).until

    # The API needs a token: the page asks for it, and again when the server refuses it.
    driver.get(console.url + "/")
    until(ec.visibility_of_element_located(("id", "token-input"))).send_keys("not-the-token", Keys.ENTER)
    until(ec.visibility_of_element_located(("id", "token-error")))
    assert "refused" in driver.find_element("id", "token-error").text
    driver.find_element("id", "token-input").send_keys(TOKEN, Keys.ENTER)
    until(lambda d: len(d.find_elements(*by_testid("instance-row"))) == 5)
    until(lambda d: d.find_element("css selector", '.chip[data-status="completed"] .n').text == "3")
    screenshot(driver, artifacts / "dashboard-instances.png")

    # Filter on one status with its chip.
    driver.find_element("css selector", '.chip[data-status="compensated"]').click()
    until(lambda d: [r.get_attribute("data-id") for r in d.find_elements(*by_testid("instance-row"))]
          == ["order-1004"])

    # The compensated saga: steps in the order they ran, then the compensations newest first.
    driver.find_element("link text", "order-1004").click()
    until(lambda d: len(d.find_elements("css selector", '[data-testid="timeline-row"][data-kind="compensation"]'))
          == 3)
    rows = driver.find_elements(*by_testid("timeline-row"))
    shown = [(r.get_attribute("data-kind"), r.get_attribute("data-name")) for r in rows]
    assert shown == [
        ("step", "reserve_stock"), ("step", "charge_card"), ("step", "book_courier"), ("step", "ship_parcel"),
        ("compensation", "cancel_courier"), ("compensation", "refund_card"), ("compensation", "release_stock"),
    ]
    by_name = {r.get_attribute("data-name"): r for r in rows if r.get_attribute("data-kind") == "step"}
    assert "2 attempts" in by_name["charge_card"].text
    assert "OutOfBoxes" in by_name["ship_parcel"].text and "no boxes left" in by_name["ship_parcel"].text
    assert driver.find_element(*by_testid("status-badge")).text == "compensated"
    until(lambda d: d.find_element(*by_testid("state-status")).text == "compensated")
    details = driver.find_element(*by_testid("details")).text
    assert "StepError" in details and "ship_parcel" in details  # why the saga compensated
    assert "[object" not in driver.find_element("tag name", "main").text
    screenshot(driver, artifacts / "dashboard-timeline.png")

    # The state slider: version 1 is the started saga, the end is the compensated one.
    slider = driver.find_element(*by_testid("state-slider"))
    final_state = driver.find_element(*by_testid("state-json")).text
    slider.send_keys(Keys.HOME)
    until(lambda d: d.find_element(*by_testid("state-status")).text == "running")
    assert driver.find_element(*by_testid("state-version")).text.startswith("1 of ")
    assert driver.find_element(*by_testid("state-json")).text != final_state
    slider.send_keys(Keys.END)
    until(lambda d: d.find_element(*by_testid("state-status")).text == "compensated")
    assert driver.find_element(*by_testid("state-json")).text == final_state

    # Cancel the saga that waits for approval: button, confirmation, done.
    driver.get(console.url + "/#/instances/order-1005")
    cancel = until(ec.element_to_be_clickable(by_testid("action-cancel")))
    assert driver.find_element(*by_testid("status-badge")).text == "running"
    cancel.click()
    dialog = until(ec.visibility_of_element_located(by_testid("confirm-dialog")))
    assert "order-1005" in dialog.text
    reason = driver.find_element("id", "confirm-reason")
    reason.clear()
    reason.send_keys("customer called to cancel")
    screenshot(driver, artifacts / "dashboard-cancel.png")
    driver.find_element("id", "confirm-ok").click()
    until(ec.invisibility_of_element_located(by_testid("confirm-dialog")))
    until(lambda d: d.find_element(*by_testid("status-badge")).text == "cancelled")
    names = [(r.get_attribute("data-kind"), r.get_attribute("data-name"))
             for r in driver.find_elements(*by_testid("timeline-row"))]
    assert ("compensation", "release_stock") in names
    driver.find_element("css selector", "details.events summary").click()
    cancel_row = driver.find_element("xpath", '//details//tr[td[text()="CancelRequested"]]')
    assert f"by {ACTOR}" in cancel_row.text

    # The journal agrees, and says who did it.
    events = journal_events(console.db, "order-1005")
    requested = [(meta, event) for kind, meta, event in events if kind == "CancelRequested"]
    assert len(requested) == 1
    meta, event = requested[0]
    assert event.reason == "customer called to cancel"
    assert meta.get("actor") == ACTOR
    assert events[-1][0] == "WorkflowCancelled"

    # Script errors only: the 401 that asked for the token is logged as a network error.
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and e.get("source") != "network"]
    assert errors == []
