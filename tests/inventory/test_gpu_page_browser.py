"""A real headless Chromium edits GPU settings and switches charts on the GPU page."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from inventory.choices import Resolution
from inventory.models import Gpu, GpuSample
from tests.conftest import skip_or_fail
from tests.factories import GpuFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[object]:
    if not (CHROMIUM and CHROMEDRIVER):
        skip_or_fail("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def page(live_server, browser):
    """The GPU page of a GPU with an hour of history, opened by a logged-in admin."""
    admin = UserFactory(username="browser-admin", is_staff=True, is_superuser=True)
    gpu = GpuFactory()
    now = timezone.now().replace(second=0, microsecond=0)
    GpuSample.objects.bulk_create(
        GpuSample(
            gpu=gpu,
            ts=now - timedelta(minutes=i),
            resolution=Resolution.MINUTE,
            utilization=float(i),
            memory_used=i * 1024**3,
        )
        for i in range(1, 60)
    )
    client = Client()
    client.force_login(admin)
    browser.get(live_server.url + "/login/")
    browser.add_cookie({"name": "sessionid", "value": client.cookies["sessionid"].value})
    browser.get(f"{live_server.url}/gpus/{gpu.pk}/")
    return browser, gpu


def _wait(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _text(driver, selector: str) -> str:
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';", selector
    )


def _submit(driver, **values: str) -> None:
    from selenium.webdriver.common.by import By

    for name, value in values.items():
        field = driver.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#gpu-settings button[type=submit]").click()


def test_settings_errors_and_saves_swap_in_place_without_a_reload(page):
    driver, gpu = page
    assert len(driver.find_elements("css selector", "figure.chart svg")) == 2
    _submit(driver, reserved="81")
    _wait(lambda: "must be below" in _text(driver, "#gpu-settings .errorlist"), what="the error")
    assert Gpu.objects.get(pk=gpu.pk).reserved_override is None
    _submit(driver, reserved="2", priority="77")
    _wait(lambda: "Saved." in _text(driver, "#gpu-settings"), what="the saved note")
    gpu.refresh_from_db()
    assert (gpu.priority, gpu.reserved_override) == (77, 2 * 1024**3)
    assert driver.execute_script("return performance.getEntriesByType('navigation').length") == 1


def test_switching_a_chart_to_the_last_day_swaps_only_that_chart(page):
    driver, _ = page
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, "//figure[@id='chart-util']//a[text()='Last day']").click()
    _wait(lambda: _text(driver, "#chart-util a.current") == "Last day", what="the day chart")
    assert _text(driver, "#chart-memory a.current") == "Last hour"
    assert "last day" in _text(driver, "#chart-util .chart-summary")
