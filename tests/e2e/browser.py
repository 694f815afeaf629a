"""A headless Chromium for the browser tests, and a stack whose overview a viewer can
log in to; ``browser_fixture`` and ``stack_fixture`` make the fixtures a test module uses:
``browser = browser_fixture()``, ``stack = stack_fixture("node-a", "1xL4")``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail
from tests.e2e.stack import Stack

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@contextmanager
def headless_chromium(*, browser_log: bool = False) -> Iterator[object]:
    """A headless Chromium under chromedriver, quit on leaving (skipped, or failed in CI,
    without Debian's chromium and chromium-driver); ``browser_log``: keep the console's
    messages for ``driver.get_log("browser")``."""
    if not (CHROMIUM and CHROMEDRIVER):
        skip_or_fail("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    if browser_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def viewer_stack(state_dir: Path, node: str, gpus: str, **env: str) -> Iterator[Stack]:
    """web and the agent of ``node`` (with ``gpus``, e.g. "2xA100-80GB") on a migrated
    state directory with the user ``viewer`` (password ``viewer-password``), events polled
    every 0.1 s; ``env``: more settings. Everything it started is stopped on leaving."""
    stack = Stack(state_dir, GPUFLEET_EVENT_POLL="0.1", **env)
    try:
        stack.manage("migrate", "-v0")
        stack.create_user("viewer", "viewer-password")
        stack.start_agent(node, gpus)
        stack.start_web()
        yield stack
    finally:
        stack.stop_all()


def browser_fixture(*, browser_log: bool = False):
    """A ``browser`` fixture: a ``headless_chromium`` for each test."""

    @pytest.fixture
    def browser() -> Iterator[object]:
        with headless_chromium(browser_log=browser_log) as driver:
            yield driver

    return browser


def stack_fixture(node: str, gpus: str):
    """A ``stack`` fixture: a ``viewer_stack`` of ``node`` with ``gpus`` for each test."""

    @pytest.fixture
    def stack(tmp_path: Path) -> Iterator[Stack]:
        with viewer_stack(tmp_path, node, gpus) as stack:
            yield stack

    return stack
