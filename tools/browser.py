"""Find or install the headless Chromium and chromedriver that the browser tests drive.

Usage: ``python tools/browser.py`` prints the two paths, installing them first
when they are missing and we may.

Where they come from, in order:

1. ``SAGALOG_CHROMIUM`` and ``SAGALOG_CHROMEDRIVER`` when both are set;
2. ``chromium`` (or ``chromium-browser``, ``google-chrome``) and
   ``chromedriver`` on the ``PATH``;
3. Debian's packages ``chromium`` and ``chromium-driver``, installed with
   ``apt-get`` when we run as root (under a file lock, so parallel test runs
   install once).

Anything else (not root, no apt-get) is :class:`BrowserUnavailable`, whose
message says what to install; the tests skip with it. A failed apt-get is an
error, not a skip: the machine could have had a browser.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
PACKAGES = ("chromium", "chromium-driver")
LOCK = Path(tempfile.gettempdir()) / "sagalog-browser-install.lock"

FLAGS = (
    "--headless=new",
    "--no-sandbox",  # root in a container has no user namespaces for the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
"""Chromium flags that work headless in containers and never reach the network."""


class BrowserUnavailable(Exception):
    """No browser here and none can be installed; the message says why."""


@dataclass(frozen=True)
class Browser:
    """Where the browser and its WebDriver are."""

    chromium: str
    chromedriver: str


def find() -> Browser | None:
    """The browser and driver already on this machine, or None."""
    given = os.environ.get("SAGALOG_CHROMIUM"), os.environ.get("SAGALOG_CHROMEDRIVER")
    if given[0] and given[1]:
        return Browser(given[0], given[1])
    chromium = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    return Browser(chromium, driver) if chromium and driver else None


def install() -> None:
    """Install Debian's chromium and chromium-driver with apt-get.

    Raises:
        BrowserUnavailable: we are not root, or there is no apt-get.
        subprocess.CalledProcessError: apt-get failed.
    """
    if shutil.which("apt-get") is None:
        raise BrowserUnavailable("no chromium/chromedriver on PATH and no apt-get to install them")
    if os.geteuid() != 0:
        raise BrowserUnavailable(
            "no chromium/chromedriver on PATH; install them (Debian: apt-get install chromium "
            "chromium-driver) or set SAGALOG_CHROMIUM and SAGALOG_CHROMEDRIVER"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("browser: installing chromium and chromium-driver with apt-get", file=sys.stderr, flush=True)
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *PACKAGES], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def ensure() -> Browser:
    """The browser and driver, installing them first when missing and allowed.

    Raises:
        BrowserUnavailable: none here and none can be installed.
        subprocess.CalledProcessError: apt-get failed.
    """
    found = find()
    if found is not None:
        return found
    # One installer at a time: a second test run waits here, then finds the browser.
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            found = find()
            if found is None:
                install()
                found = find()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if found is None:
        raise BrowserUnavailable(f"apt-get installed {' '.join(PACKAGES)} but chromium/chromedriver "
                                 "are still not on PATH")
    return found


def main() -> int:
    try:
        browser = ensure()
    except BrowserUnavailable as exc:
        print(f"browser: {exc}", file=sys.stderr)
        return 1
    print(f"chromium: {browser.chromium}\nchromedriver: {browser.chromedriver}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
