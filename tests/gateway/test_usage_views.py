"""/usage/: gateway usage per served name and per key over a window, with SVG charts."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from gateway.charts import MAX_POINTS, WINDOWS, nice_ceiling, per_minute_series
from gateway.models import InferenceKey, UsageMinute

URL = reverse("gateway:usage")


def minute_ago(minutes: int) -> datetime:
    return timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=minutes)


@pytest.fixture
def usage(db) -> dict[str, InferenceKey]:
    """Two keys and two served names: 20 requests in the last hour, 100 more three hours
    ago (inside 24 h), 1000 ten days ago (outside every window)."""
    alpha, _ = InferenceKey.issue("alpha")
    beta, _ = InferenceKey.issue("beta")
    rows = [
        (alpha, "llama-8b", 5, dict(requests=10, errors=1, prompt_tokens=100,
         completion_tokens=200, ttft_ms_sum=1000, ttft_count=10, cold_starts=1)),
        (beta, "llama-8b", 5, dict(requests=4, prompt_tokens=40, completion_tokens=80,
         ttft_ms_sum=200, ttft_count=4)),
        (alpha, "qwen", 30, dict(requests=6, errors=2, prompt_tokens=60, completion_tokens=60,
         ttft_ms_sum=600, ttft_count=3, cold_starts=1)),
        (beta, "qwen", 180, dict(requests=100, prompt_tokens=1000, completion_tokens=1000,
         ttft_ms_sum=1000, ttft_count=100)),
        (alpha, "llama-8b", 10 * 24 * 60, dict(requests=1000, prompt_tokens=9999)),
    ]  # fmt: skip
    for key, name, ago, counts in rows:
        UsageMinute.objects.create(key=key, served_name=name, minute=minute_ago(ago), **counts)
    return {"alpha": alpha, "beta": beta}


def numbers(html: str, row_id: str) -> list[str]:
    """The cells of the table row whose first cell contains ``row_id``."""
    for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        if row_id in row:
            cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
            return [re.sub(r"<[^>]+>", "", cell).strip() for cell in cells][1:]
    raise AssertionError(f"no row for {row_id}")


def test_the_usage_page_needs_login(anon_client, db):
    assert anon_client.get(URL).status_code == 302


def test_the_last_hour_counts_only_its_rows_per_served_name_and_key(viewer_client, usage):
    response = viewer_client.get(URL, {"window": "1h"})
    assert response.status_code == 200
    html = response.content.decode()
    report = response.context["report"]
    assert report["totals"]["requests"] == 20 and report["totals"]["cold_starts"] == 2
    assert report["totals"]["mean_ttft_ms"] == round(1800 / 17, 1)
    assert numbers(html, "<code>llama-8b</code>") == ["14", "1", "140", "280", "85.7 ms", "1"]
    assert numbers(html, "<code>qwen</code>") == ["6", "2", "60", "60", "200.0 ms", "1"]
    assert numbers(html, "alpha") == ["16", "3", "160", "260", "123.1 ms", "2"]
    assert numbers(html, "beta") == ["4", "0", "40", "80", "50.0 ms", "0"]
    assert usage["alpha"].prefix in html


def test_the_default_window_is_24_hours(viewer_client, usage):
    response = viewer_client.get(URL)
    assert response.context["window"] == "24h"
    assert response.context["report"]["totals"]["requests"] == 120
    assert numbers(response.content.decode(), "<code>qwen</code>")[0] == "106"


def test_a_week_leaves_out_older_rows(viewer_client, usage):
    response = viewer_client.get(URL, {"window": "7d"})
    assert response.context["report"]["totals"]["requests"] == 120


def test_an_unknown_window_is_refused(viewer_client, usage):
    response = viewer_client.get(URL, {"window": "2h"})
    assert response.status_code == 400
    assert "1h, 24h, 7d" in response.content.decode()


def test_each_served_name_gets_a_requests_and_a_tokens_chart(viewer_client, usage):
    html = viewer_client.get(URL, {"window": "1h"}).content.decode()
    assert html.count("<svg") == 4
    assert html.count("Requests per minute") >= 2 and html.count("Tokens per minute") >= 2
    assert 'class="current" aria-current="true">Last hour' in html


def test_an_empty_window_says_so(viewer_client, db):
    html = viewer_client.get(URL, {"window": "1h"}).content.decode()
    assert "No requests in this window." in html and "<svg" not in html


@pytest.mark.parametrize("window", list(WINDOWS))
def test_a_chart_has_at_most_120_points_per_window(window):
    spec = WINDOWS[window]
    points = per_minute_series([], 0.0, float(spec.seconds), spec.bucket)
    assert len(points) <= MAX_POINTS and spec.bucket % 60 == 0
    assert points[-1][0] + spec.bucket / 2 == spec.seconds


def test_buckets_are_summed_and_shown_per_minute():
    minutes = [(0.0, 6.0), (60.0, 4.0), (120.0, 3.0), (600.0, 99.0)]
    points = per_minute_series(minutes, 0.0, 240.0, 120)
    assert points == [(60.0, 5.0), (180.0, 1.5)]


def test_the_chart_top_is_a_round_number():
    assert nice_ceiling(0) == 1 and nice_ceiling(7) == 8 and nice_ceiling(101) == 125
