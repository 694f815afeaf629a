"""The chart fragment that the GPU page swaps when switching between hour and day."""

from __future__ import annotations

from django.urls import reverse

HX = {"HX-Request": "true"}


def _url(gpu, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return reverse("inventory:gpu-chart", args=[gpu.pk]) + (f"?{query}" if query else "")


def test_chart_fragment_draws_the_memory_of_the_last_day(viewer_client, gpu):
    response = viewer_client.get(_url(gpu, range="day", metric="memory"), headers=HX)
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith("<figure") and "<html" not in html
    assert 'id="chart-memory"' in html
    assert "Memory used, last day" in html
    assert ">80 GiB</text>" in html
    assert 'class="current" aria-current="true">Last day' in html


def test_chart_fragment_defaults_to_the_utilisation_of_the_last_hour(viewer_client, gpu):
    html = viewer_client.get(_url(gpu), headers=HX).content.decode()
    assert 'id="chart-util"' in html and "Utilisation, last hour" in html


def test_chart_links_switch_range_with_htmx_and_work_without_it(viewer_client, gpu):
    html = viewer_client.get(_url(gpu, metric="util"), headers=HX).content.decode()
    chart_url = reverse("inventory:gpu-chart", args=[gpu.pk])
    assert f'hx-get="{chart_url}?range=day&amp;metric=util"' in html
    assert f'href="{reverse("inventory:gpu", args=[gpu.pk])}?range=day"' in html
    assert 'hx-target="#chart-util"' in html


def test_memory_chart_marks_the_usable_memory(viewer_client, gpu):
    html = viewer_client.get(_url(gpu, metric="memory"), headers=HX).content.decode()
    assert ">usable</text>" in html


def test_unknown_range_is_a_bad_request(viewer_client, gpu):
    assert viewer_client.get(_url(gpu, range="year")).status_code == 400


def test_unknown_metric_is_a_bad_request(viewer_client, gpu):
    assert viewer_client.get(_url(gpu, metric="fan")).status_code == 400


def test_chart_of_unknown_gpu_is_not_found(viewer_client, db):
    url = reverse("inventory:gpu-chart", args=["8c1f3a0e-0000-4000-8000-000000000000"])
    assert viewer_client.get(url).status_code == 404
