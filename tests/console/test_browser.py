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


# -- the page ------------------------------------------------------------------------


class Page:
    """The driver with waits that look again when live refresh replaced an element."""

    def __init__(self, driver: Any) -> None:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.until = WebDriverWait(driver, WAIT, ignored_exceptions=[StaleElementReferenceException]).until

    def one(self, testid: str) -> Any:
        return self.driver.find_element("css selector", f'[data-testid="{testid}"]')

    def all(self, testid: str) -> list[Any]:
        return list(self.driver.find_elements("css selector", f'[data-testid="{testid}"]'))

    def text(self, testid: str) -> str:
        return str(self.one(testid).text)

    def visible(self, testid: str) -> Any:
        from selenium.webdriver.support import expected_conditions as ec

        return self.until(ec.visibility_of_element_located(("css selector", f'[data-testid="{testid}"]')))

    def gone(self, testid: str) -> None:
        from selenium.webdriver.support import expected_conditions as ec

        self.until(ec.invisibility_of_element_located(("css selector", f'[data-testid="{testid}"]')))

    def by_id(self, element_id: str) -> Any:
        return self.driver.find_element("id", element_id)

    def main_text(self) -> str:
        return str(self.driver.find_element("tag name", "main").text)

    def timeline(self) -> list[tuple[str, str]]:
        rows = self.all("timeline-row")
        return [(r.get_attribute("data-kind"), r.get_attribute("data-name")) for r in rows]


# -- the journal -----------------------------------------------------------------------


def start_orders(db: str) -> None:
    """Three orders that complete, one that compensates, and one in a checkout session
    that waits for approval."""
    from sagalog.engine import Sessions, SyncClient

    async def open_session() -> None:
        journal = await connect(db)
        try:
            await Sessions(journal).open("cart-ann", kind="checkout", attributes={"user": "ann"},
                                         idle_timeout=3600)
        finally:
            await journal.close()

    anyio.run(open_session)
    with SyncClient(db, modules=["shop_workflows"]) as client:
        for n in (1001, 1002, 1003):
            client.start("shop.place_order", {"id": f"A-{n}", "items": 2}, id=f"order-{n}")
        client.start("shop.place_order", {"id": "A-1004", "items": 1, "boxes": 0}, id="order-1004")
        client.start("shop.hold_order", {"id": "A-1005", "items": 5}, id="order-1005", session_id="cart-ann")


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
    start_orders(console.db)
    wait_until("the orders to settle", lambda: console.status("order-1004") == "compensated"
               and all(console.status(f"order-{n}") == "completed" for n in (1001, 1002, 1003)))
    wait_until("order-1005 to wait for its signal",
               lambda: console.get("/api/instances/order-1005")["state"]["waits"])
    page = Page(driver)
    driver.get(console.url + "/")
    give_token(page)
    list_and_filter(page, artifacts)
    read_compensated_timeline(page, artifacts)
    walk_state_versions(page)
    refuse_bad_signal(page, console)
    cancel_from_the_page(page, console, artifacts)
    see_the_session(page)

    # Script errors only: the 401 that asked for the token is logged as a network error.
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and e.get("source") != "network"]
    assert errors == []


def give_token(page: Page) -> None:
    """The API needs a token: the page asks for it, and again when the server refuses it."""
    from selenium.webdriver.common.keys import Keys

    page.until(lambda d: page.by_id("token-input").is_displayed())
    page.by_id("token-input").send_keys("not-the-token", Keys.ENTER)
    page.until(lambda d: page.by_id("token-error").is_displayed())
    assert "refused" in page.by_id("token-error").text
    page.by_id("token-input").send_keys(TOKEN, Keys.ENTER)


def list_and_filter(page: Page, artifacts: Path) -> None:
    """All five orders are listed; a status chip narrows the list to one."""
    page.until(lambda d: len(page.all("instance-row")) == 5)
    chip = '.chip[data-status="{}"]'
    page.until(lambda d: d.find_element("css selector", chip.format("completed") + " .n").text == "3")
    screenshot(page.driver, artifacts / "dashboard-instances.png")
    page.driver.find_element("css selector", chip.format("compensated")).click()
    page.until(lambda d: [r.get_attribute("data-id") for r in page.all("instance-row")] == ["order-1004"])


def read_compensated_timeline(page: Page, artifacts: Path) -> None:
    """Steps in the order they ran, then the compensations newest first, with attempts and errors."""
    page.driver.find_element("link text", "order-1004").click()
    page.until(lambda d: [kind for kind, _ in page.timeline()].count("compensation") == 3)
    assert page.timeline() == [
        ("step", "reserve_stock"), ("step", "charge_card"), ("step", "book_courier"),
        ("step", "ship_parcel"), ("compensation", "cancel_courier"), ("compensation", "refund_card"),
        ("compensation", "release_stock"),
    ]
    rows = {r.get_attribute("data-name"): r for r in page.all("timeline-row")}
    assert "2 attempts" in rows["charge_card"].text
    assert "OutOfBoxes" in rows["ship_parcel"].text and "no boxes left" in rows["ship_parcel"].text
    assert "undoes book_courier" in rows["cancel_courier"].text
    assert page.text("status-badge") == "compensated"
    page.until(lambda d: page.text("state-status") == "compensated")
    details = page.text("details")
    assert "StepError" in details and "ship_parcel" in details  # why the saga compensated
    assert "[object" not in page.main_text()
    screenshot(page.driver, artifacts / "dashboard-timeline.png")


def walk_state_versions(page: Page) -> None:
    """The slider: version 1 is the saga just started, the last one the compensated saga."""
    from selenium.webdriver.common.keys import Keys

    slider = page.one("state-slider")
    final_state = page.text("state-json")
    slider.send_keys(Keys.HOME)
    page.until(lambda d: page.text("state-status") == "running")
    assert page.text("state-version").startswith("1 of 25 · WorkflowStarted")
    assert page.text("state-json") != final_state
    slider.send_keys(Keys.END)
    page.until(lambda d: page.text("state-status") == "compensated")
    assert page.text("state-json") == final_state


def refuse_bad_signal(page: Page, console: Console) -> None:
    """A signal whose payload is not JSON is refused in the dialog, and nothing is sent."""
    page.driver.get(console.url + "/#/instances/order-1005")
    page.until(lambda d: page.one("action-signal").is_enabled())
    page.one("action-signal").click()
    page.visible("confirm-dialog")
    assert page.by_id("confirm-name").get_attribute("value") == "approved"  # the signal it waits for
    payload = page.by_id("confirm-payload")
    payload.clear()
    payload.send_keys("{not json")
    page.by_id("confirm-ok").click()
    page.until(lambda d: "not valid JSON" in page.by_id("confirm-error").text)
    page.by_id("confirm-cancel").click()
    page.gone("confirm-dialog")
    assert "SignalReceived" not in [kind for kind, _, _ in journal_events(console.db, "order-1005")]


def cancel_from_the_page(page: Page, console: Console, artifacts: Path) -> None:
    """Cancel, confirm: the worker compensates, and the journal says who cancelled."""
    assert page.text("status-badge") == "running"
    page.one("action-cancel").click()
    assert "order-1005" in page.visible("confirm-dialog").text
    reason = page.by_id("confirm-reason")
    reason.clear()
    reason.send_keys("customer called to cancel")
    screenshot(page.driver, artifacts / "dashboard-cancel.png")
    page.by_id("confirm-ok").click()
    page.gone("confirm-dialog")
    page.until(lambda d: page.text("status-badge") == "cancelled")
    assert ("compensation", "release_stock") in page.timeline()
    page.driver.find_element("css selector", "details.events summary").click()
    cancel_row = page.driver.find_element("xpath", '//details//tr[td[text()="CancelRequested"]]')
    assert f"by {ACTOR}" in cancel_row.text

    events = journal_events(console.db, "order-1005")
    requested = [(meta, event) for kind, meta, event in events if kind == "CancelRequested"]
    assert len(requested) == 1
    meta, event = requested[0]
    assert event.reason == "customer called to cancel"
    assert meta.get("actor") == ACTOR
    assert events[-1][0] == "WorkflowCancelled"


def see_the_session(page: Page) -> None:
    """The cancelled order's session page lists it; the session list has the session."""
    page.driver.execute_script("window.scrollTo(0, 0)")  # the link sits under the sticky header
    page.driver.find_element("link text", "cart-ann").click()
    page.until(lambda d: d.find_elements("css selector", 'a[href="#/instances/order-1005"]'))
    assert "checkout" in page.main_text() and '"user": "ann"' in page.main_text()
    page.driver.find_element("link text", "Sessions").click()
    page.until(lambda d: [r.get_attribute("data-id") for r in page.all("session-row")] == ["cart-ann"])


def test_operator_skips_a_failed_compensation(console: Console, driver: Any, artifacts: Path) -> None:
    """A refund the bank refuses leaves the saga in compensation_failed; the operator
    sees the failed compensation, skips it from the page, and the saga finishes compensating."""
    from sagalog.engine import SyncClient

    with SyncClient(console.db, modules=["shop_workflows"]) as client:
        client.start("shop.place_order", {"id": "STUCK-2001", "boxes": 0}, id="order-2001")
    wait_until("order-2001 to wait for an operator",
               lambda: console.status("order-2001") == "compensation_failed")
    page = Page(driver)
    driver.get(console.url + "/#/instances/order-2001")
    give_token(page)
    page.until(lambda d: page.text("status-badge") == "compensation failed")
    rows = {r.get_attribute("data-name"): r for r in page.all("timeline-row")}
    assert "failed" in rows["refund_card"].text and "the bank refused" in rows["refund_card"].text
    assert "release_stock" not in rows  # the compensations after it wait
    buttons = page.driver.find_elements("css selector", ".actions button")
    shown = sorted(b.get_attribute("data-testid") for b in buttons)
    assert shown == ["action-retry", "action-skip-compensation"]

    page.one("action-skip-compensation").click()
    page.visible("confirm-dialog")
    reason = page.by_id("confirm-reason")
    reason.clear()
    reason.send_keys("refunded by bank transfer, ticket 4711")
    screenshot(driver, artifacts / "dashboard-skip-compensation.png")
    page.by_id("confirm-ok").click()
    page.gone("confirm-dialog")
    page.until(lambda d: page.text("status-badge") == "compensated")
    assert page.timeline()[-1] == ("compensation", "release_stock")

    events = journal_events(console.db, "order-2001")
    skipped = [meta for kind, meta, _ in events if kind == "CompensationSkipped"]
    assert len(skipped) == 1
    assert skipped[0]["actor"] == ACTOR and skipped[0]["reason"] == "refunded by bank transfer, ticket 4711"
