"""Under the Content-Security-Policy a real headless Chromium still logs in, gets live
fleet updates over the websocket, and the GPU page's charts and polling still work, with
no violation reported."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.browser import browser_fixture, stack_fixture
from tests.e2e.test_live_overview_browser import _indicator, _log_in, _row_state, _wait

pytestmark = pytest.mark.browser


stack = stack_fixture("csp-node", "1xA100-80GB")
browser = browser_fixture(browser_log=True)


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
