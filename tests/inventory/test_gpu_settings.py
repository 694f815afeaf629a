"""Changing a GPU's priority, enabled flag and reserved memory from the GPU page."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from core.units import GIB, MIB
from inventory.models import Gpu

HX = {"HX-Request": "true", "HX-Target": "gpu-settings"}


def _url(gpu) -> str:
    return reverse("inventory:gpu-settings", args=[gpu.pk])


def _form(**overrides: str) -> dict[str, str]:
    data = {"priority": "50", "enabled": "on", "reserved": "", "reserved_unit": "GiB"}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def _field_block(html: str, name: str) -> str:
    """The markup of one form field: from its input up to the next field."""
    start = html.index(f'name="{name}"')
    begin = html.rindex('<div class="field', 0, start)
    end = html.find('<div class="field', start)
    return html[begin : end if end != -1 else len(html)]


def _unchanged(gpu: Gpu) -> None:
    fresh = Gpu.objects.get(pk=gpu.pk)
    assert (fresh.priority, fresh.enabled, fresh.reserved_override) == (50, True, None)


def test_operator_changes_priority_enabled_and_reserved_memory(operator_client, gpu):
    data = _form(priority="80", enabled=None, reserved="2", reserved_unit="GiB")
    response = operator_client.post(_url(gpu), data, headers=HX)
    assert response.status_code == 200
    gpu.refresh_from_db()
    assert (gpu.priority, gpu.enabled, gpu.reserved_override) == (80, False, 2 * GIB)
    html = response.content.decode()
    assert html.lstrip().startswith('<form id="gpu-settings"')
    assert "Saved." in html
    assert 'id="gpu-state" class="state disabled" hx-swap-oob="true"' in html


def test_reserved_memory_in_mib_is_stored_in_bytes(operator_client, gpu):
    operator_client.post(_url(gpu), _form(reserved="1536", reserved_unit="MiB"), headers=HX)
    gpu.refresh_from_db()
    assert gpu.reserved_override == 1536 * MIB


def test_fractional_gib_are_stored_in_bytes(operator_client, gpu):
    operator_client.post(_url(gpu), _form(reserved="1.5", reserved_unit="GiB"), headers=HX)
    gpu.refresh_from_db()
    assert gpu.reserved_override == 1536 * MIB


def test_saved_reserved_memory_is_shown_in_the_unit_that_fits(operator_client, gpu):
    html = operator_client.post(
        _url(gpu), _form(reserved="2048", reserved_unit="MiB"), headers=HX
    ).content.decode()
    assert 'value="2"' in _field_block(html, "reserved")
    assert re.search(r'<option value="GiB" selected>', html)


def test_empty_reserved_memory_means_the_global_default(operator_client, gpu):
    gpu.reserved_override = 4 * GIB
    gpu.save()
    operator_client.post(_url(gpu), _form(reserved=""), headers=HX)
    gpu.refresh_from_db()
    assert gpu.reserved_override is None


def test_plain_post_redirects_back_to_the_gpu_page(operator_client, gpu):
    response = operator_client.post(_url(gpu), _form(priority="10"))
    assert response.status_code == 302
    assert response.url == reverse("inventory:gpu", args=[gpu.pk])
    gpu.refresh_from_db()
    assert gpu.priority == 10


def test_viewer_cannot_change_priority(viewer_client, gpu):
    response = viewer_client.post(_url(gpu), _form(priority="99"), headers=HX)
    assert response.status_code == 403
    _unchanged(gpu)


def test_anonymous_visitor_cannot_change_settings(anon_client, gpu):
    response = anon_client.post(_url(gpu), _form(priority="99"))
    assert response.status_code == 302 and "login" in response.url
    _unchanged(gpu)


@pytest.mark.parametrize(
    ("priority", "message"),
    [
        ("abc", "Enter a whole number."),
        ("101", "Ensure this value is less than or equal to 100."),
        ("-1", "Ensure this value is greater than or equal to 0."),
        ("", "This field is required."),
    ],
)
def test_bad_priority_is_shown_next_to_the_field_and_nothing_changes(
    operator_client, gpu, priority, message
):
    response = operator_client.post(_url(gpu), _form(priority=priority), headers=HX)
    assert response.status_code == 200  # htmx 2 swaps 2xx only: the errors must be swapped in
    html = response.content.decode()
    assert message in _field_block(html, "priority")
    assert "Saved." not in html
    _unchanged(gpu)


def test_reserved_memory_above_the_total_is_rejected_next_to_the_field(operator_client, gpu):
    response = operator_client.post(
        _url(gpu), _form(reserved="81", reserved_unit="GiB", priority="70"), headers=HX
    )
    html = response.content.decode()
    assert "Reserved memory must be below the GPU&#x27;s total memory." in _field_block(
        html, "reserved"
    )
    _unchanged(gpu)


def test_negative_reserved_memory_is_rejected(operator_client, gpu):
    html = operator_client.post(_url(gpu), _form(reserved="-1"), headers=HX).content.decode()
    assert "greater than or equal to 0" in _field_block(html, "reserved")
    _unchanged(gpu)


def test_plain_post_with_errors_shows_the_page_again_with_422(operator_client, gpu):
    response = operator_client.post(_url(gpu), _form(priority="abc"))
    assert response.status_code == 422
    html = response.content.decode()
    assert "<html" in html and "Enter a whole number." in html
    _unchanged(gpu)


def test_saving_tells_open_pages(
    operator_client, gpu, django_capture_on_commit_callbacks, sent_events
):
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(_url(gpu), _form(priority="75"), headers=HX)
    assert [e["kind"] for e in sent_events] == ["gpu.settings"]


def test_admin_may_change_settings(admin_client, gpu):
    admin_client.post(_url(gpu), _form(priority="5"), headers=HX)
    gpu.refresh_from_db()
    assert gpu.priority == 5


def test_settings_of_unknown_gpu_are_not_found(operator_client, db):
    url = reverse("inventory:gpu-settings", args=["8c1f3a0e-0000-4000-8000-000000000000"])
    assert operator_client.post(url, _form()).status_code == 404


def test_getting_the_settings_fragment_shows_the_current_values(operator_client, gpu):
    gpu.reserved_override = 1536 * MIB
    gpu.save()
    html = operator_client.get(_url(gpu), headers=HX).content.decode()
    assert 'value="1536"' in _field_block(html, "reserved")
    assert '<option value="MiB" selected>' in html


def test_viewer_gets_the_read_only_settings_fragment(viewer_client, gpu):
    html = viewer_client.get(_url(gpu), headers=HX).content.decode()
    assert "Only operators can change these." in html


def test_an_unedited_odd_byte_count_is_kept_exactly(operator_client, gpu):
    gpu.reserved_override = 10**9  # set through the API: not a whole number of MiB
    gpu.save()
    html = operator_client.get(_url(gpu), headers=HX).content.decode()
    assert 'value="953.674"' in _field_block(html, "reserved")
    data = _form(priority="60", reserved="953.674", reserved_unit="MiB")
    operator_client.post(_url(gpu), data, headers=HX)
    gpu.refresh_from_db()
    assert (gpu.priority, gpu.reserved_override) == (60, 10**9)
