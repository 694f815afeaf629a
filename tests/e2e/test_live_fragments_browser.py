"""Every fragment a live page is sent lands where it belongs: on the overview and on a
node's page, GPU rows change live and htmx reports no fragment it could not place
(``htmx:oobErrorNoTarget``: rows sent after other elements lose their table tags)."""

from __future__ import annotations

import time

import pytest

from tests.e2e.browser import browser_fixture, stack_fixture
from tests.e2e.test_live_overview_browser import _indicator, _log_in, _row_state, _wait

pytestmark = pytest.mark.browser


stack = stack_fixture("frag-node", "2xA100-80GB")
browser = browser_fixture(browser_log=True)


def _htmx_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if "htmx:" in entry["message"]]


def _watch_rows_change(driver) -> None:
    first = _wait(lambda: _row_state(driver), what="a GPU row")
    _wait(
        lambda: (s := _row_state(driver)) and s[0] == first[0] and s[1] != first[1],
        what="the row's sample to change without a reload",
    )
    time.sleep(3)  # a few more ticks, with the fleet summary and node lines among them


def test_the_overview_and_a_node_page_place_every_live_fragment(stack, browser):
    _log_in(browser, stack)
    _wait(lambda: "live" in _indicator(browser).split(), what="the live indicator")
    _watch_rows_change(browser)
    assert _htmx_errors(browser) == []

    node_url = browser.execute_script("return document.querySelector('a[href^=\"/nodes/\"]').href")
    browser.get(node_url)
    _watch_rows_change(browser)
    assert _htmx_errors(browser) == []
    assert browser.execute_script("return document.querySelectorAll('tr.gpu').length") == 2
