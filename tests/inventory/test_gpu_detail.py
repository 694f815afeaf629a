"""The GPU page: facts, current readings, processes, history charts, settings."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from core.units import GIB
from inventory.choices import Resolution
from inventory.models import GpuSample


def _url(gpu) -> str:
    return reverse("inventory:gpu", args=[gpu.pk])


def _history(gpu, minutes: int = 30) -> None:
    now = timezone.now().replace(second=0, microsecond=0)
    GpuSample.objects.bulk_create(
        GpuSample(
            gpu=gpu,
            ts=now - timedelta(minutes=i),
            resolution=Resolution.MINUTE,
            utilization=float(i),
            memory_used=(i % 10) * GIB,
        )
        for i in range(1, minutes)
    )


def test_gpu_page_shows_the_gpus_facts(viewer_client, gpu):
    html = viewer_client.get(_url(gpu)).content.decode()
    for fact in (
        gpu.node.name,
        gpu.name,
        gpu.uuid,
        "81,920 MiB",
        "550.54.15",
        "12.4",
        "8.0",
        "400 W",
    ):
        assert fact in html
    assert 'id="gpu-state" class="state enabled"' in html


def test_gpu_page_shows_current_readings(viewer_client, gpu):
    html = viewer_client.get(_url(gpu)).content.decode()
    assert "37%" in html
    assert "2,048 / 81,920 MiB" in html
    assert "51 °C" in html
    assert "180 / 400 W" in html


def test_gpu_page_lists_processes_using_the_gpu_largest_first(viewer_client, gpu):
    gpu.processes = [
        {"pid": 4242, "memory_used": 512 * 1024**2, "name": "python"},
        {"pid": 777, "memory_used": 6 * GIB, "name": "llama-server"},
    ]
    gpu.save()
    html = viewer_client.get(_url(gpu)).content.decode()
    assert html.index("llama-server") < html.index("python")
    assert "6,144 MiB" in html and "4242" in html


def test_gpu_page_without_processes_says_so(viewer_client, gpu):
    assert "No processes are using this GPU." in viewer_client.get(_url(gpu)).content.decode()


def test_gpu_page_draws_utilisation_and_memory_history_as_svg_charts(viewer_client, gpu):
    _history(gpu)
    html = viewer_client.get(_url(gpu)).content.decode()
    assert html.count("<svg") == 2
    assert 'class="line util"' in html and 'class="line memory"' in html
    assert 'id="chart-util"' in html and 'id="chart-memory"' in html
    assert "Utilisation, last hour" in html


def test_gpu_page_shows_the_day_when_asked(viewer_client, gpu):
    html = viewer_client.get(_url(gpu) + "?range=day").content.decode()
    assert "Utilisation, last day" in html
    assert "Memory used, last day" in html


def test_gpu_page_without_history_says_there_is_no_data(viewer_client, gpu):
    html = viewer_client.get(_url(gpu)).content.decode()
    assert html.count("No data for this range yet") == 2


def test_polling_the_readings_does_not_rebuild_the_charts(viewer_client, gpu):
    _history(gpu)
    response = viewer_client.get(
        _url(gpu), headers={"HX-Request": "true", "HX-Target": "gpu-readings"}
    )
    html = response.content.decode()
    assert 'id="gpu-readings"' in html
    assert "<svg" not in html


def test_unknown_gpu_is_not_found(viewer_client, db):
    response = viewer_client.get(
        reverse("inventory:gpu", args=["8c1f3a0e-0000-4000-8000-000000000000"])
    )
    assert response.status_code == 404


def test_anonymous_visitor_is_sent_to_log_in(anon_client, gpu):
    response = anon_client.get(_url(gpu))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_viewer_sees_settings_read_only(viewer_client, gpu):
    html = viewer_client.get(_url(gpu)).content.decode()
    assert 'id="gpu-settings" class="card settings readonly"' in html
    assert "Only operators can change these." in html
    assert 'name="priority"' not in html


@pytest.mark.parametrize("persona", ["operator_client", "admin_client"])
def test_operators_and_admins_get_the_settings_form(request, persona, gpu):
    html = request.getfixturevalue(persona).get(_url(gpu)).content.decode()
    assert 'hx-post="' + reverse("inventory:gpu-settings", args=[gpu.pk]) in html
    assert 'name="priority"' in html and 'name="reserved"' in html


def test_reserved_memory_shows_the_global_default_when_not_overridden(viewer_client, gpu):
    html = viewer_client.get(_url(gpu)).content.decode()
    assert "1,024 MiB</span> (global default)" in html


def test_reserved_memory_shows_that_it_is_overridden(viewer_client, gpu):
    gpu.reserved_override = 3 * GIB
    gpu.save()
    html = viewer_client.get(_url(gpu)).content.decode()
    assert "3,072 MiB</span> (overridden)" in html


def test_a_missing_gpu_is_shown_as_missing(viewer_client, gpu):
    gpu.present = False
    gpu.save()
    html = viewer_client.get(_url(gpu)).content.decode()
    assert 'class="state missing"' in html
