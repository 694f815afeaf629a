"""Under the Content-Security-Policy a real headless Chromium still logs in, gets live
fleet updates over the websocket, and the GPU page's charts and polling still work, with
no violation reported."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import skip_or_fail
from tests.e2e.stack import Stack
from tests.e2e.test_live_overview_browser import _indicator, _log_in, _row_state, _wait

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    stack = Stack(tmp_path, GPUFLEET_EVENT_POLL="0.1")
    stack.manage("migrate", "-v0")
    stack.create_user("viewer", "viewer-password")
    stack.start_agent("csp-node", "1xA100-80GB")
    stack.start_web()
    yield stack
    stack.stop_all()


@pytest.fixture
def browser() -> Iterator[object]:
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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _violations(driver) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]


def test_live_pages_work_under_the_policy_without_violations(stack, browser):
    policy = httpx.get(stack.url + "/login/").headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    _log_in(browser, stack)
    first = _wait(lambda: _row_state(browser), what="a GPU row")
    _wait(lambda: "live" in _indicator(browser).split(), what="the live indicator")
    _wait(
        lambda: (s := _row_state(browser)) and s[1] != first[1],
        what="a live update over the websocket",
    )
    assert _violations(browser) == []

    gpu_link = browser.execute_script("return document.querySelector('a[href^=\"/gpus/\"]').href")
    browser.get(gpu_link)
    _wait(lambda: browser.execute_script("return !!document.querySelector('svg')"), what="a chart")
    browser.execute_script("document.getElementById('gpu-readings').dataset.seen = '1'")
    _wait(
        lambda: browser.execute_script(
            "const e = document.getElementById('gpu-readings'); return e && !e.dataset.seen"
        ),
        timeout=15,
        what="the readings to refresh (htmx polling)",
    )
    assert _violations(browser) == []
