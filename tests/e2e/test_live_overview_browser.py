"""A real headless Chromium logs in and watches a GPU row change live."""

from __future__ import annotations

import time

import pytest

from tests.e2e.browser import browser_fixture, stack_fixture, viewer_stack
from tests.e2e.stack import Stack

pytestmark = pytest.mark.browser


stack = stack_fixture("live-node", "2xA100-80GB")
browser = browser_fixture()


def _wait(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _first_row(driver):
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "tr.gpu")
    return rows[0] if rows else None


def _row_state(driver) -> tuple[str, str] | None:
    """(row id, data-sampled) of the first GPU row, read in one script call."""
    return driver.execute_script(
        "const r = document.querySelector('tr.gpu');return r ? [r.id, r.dataset.sampled] : null;"
    )


def _log_in(driver, stack: Stack) -> None:
    from selenium.webdriver.common.by import By

    driver.get(stack.url + "/")
    assert "/login/" in driver.current_url
    driver.find_element(By.NAME, "username").send_keys("viewer")
    driver.find_element(By.NAME, "password").send_keys("viewer-password")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The click returns before the login's POST has answered: the login page is still
    # there until the browser has followed the redirect.
    _wait(lambda: "/login/" not in driver.current_url, 30.0, "the redirect after logging in")


def _indicator(driver) -> str:
    """The live indicator's classes ("" while the page has none, e.g. still loading)."""
    return driver.execute_script(
        "const e = document.getElementById('live-status');return e ? e.className : '';"
    )


def test_a_logged_in_viewer_sees_a_gpu_row_change_live(stack, browser):
    _log_in(browser, stack)
    first = _wait(lambda: _row_state(browser), what="a GPU row")
    _wait(lambda: "live" in _indicator(browser).split(), what="the live indicator")
    changed = _wait(
        lambda: (s := _row_state(browser)) and s[0] == first[0] and s[1] != first[1] and s,
        what="the row's sample to change without a reload",
    )
    assert float(changed[1]) > float(first[1])
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1
    browser.save_screenshot(str(stack.state_dir / "overview.png"))


def test_the_indicator_shows_when_updates_stop_and_a_reconnect_resyncs(stack, browser):
    _log_in(browser, stack)
    _wait(lambda: "live" in _indicator(browser).split(), what="the live indicator")
    stack.stop("web")
    _wait(
        lambda: any(s in _indicator(browser) for s in ("down", "stale")),
        what="the indicator to show the outage",
    )
    before = _row_state(browser)
    stack.start_web()
    _wait(lambda: "live" in _indicator(browser).split(), timeout=30, what="reconnect")
    _wait(
        lambda: (s := _row_state(browser)) and s[1] != before[1], what="fresh rows after the resync"
    )


def _badge(driver) -> str:
    return driver.execute_script(
        "const b = document.querySelector('.node-header .badge'); return b ? b.textContent : '';"
    )


def test_a_node_whose_agent_dies_turns_offline_live_and_back_online(tmp_path, browser):
    with viewer_stack(tmp_path, "lonely", "1xL4", GPUFLEET_HEARTBEAT_TIMEOUT="3") as stack:
        _log_in(browser, stack)
        _wait(lambda: _badge(browser).strip() == "Online", what="the node online")
        stack.stop("agent-lonely")
        _wait(lambda: _badge(browser).strip() == "Offline", timeout=20, what="the node offline")
        alerts = browser.execute_script(
            "return document.getElementById('alerts-panel').textContent"
        )
        assert "lonely is offline" in alerts
        stack.start_agent("lonely", "1xL4")
        _wait(lambda: _badge(browser).strip() == "Online", timeout=20, what="the node back")
