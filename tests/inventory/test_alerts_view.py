"""The alerts page: active alerts first, then the history, filtered and paginated."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from django.urls import reverse
from django.utils import timezone

from inventory.models import Alert
from tests.factories import AlertFactory, NodeFactory

URL = reverse("inventory:alerts")


def _alert(
    message: str, *, raised_minutes_ago: float, cleared_minutes_ago: float | None = None, **fields
) -> Alert:
    alert = cast(Alert, AlertFactory(message=message, **fields))
    now = timezone.now()
    update = {"raised_at": now - timedelta(minutes=raised_minutes_ago)}
    if cleared_minutes_ago is not None:
        update["cleared_at"] = now - timedelta(minutes=cleared_minutes_ago)
    Alert.objects.filter(pk=alert.pk).update(**update)
    return alert


def test_active_alerts_come_before_the_history(viewer_client, node):
    _alert("old and cleared", raised_minutes_ago=60, cleared_minutes_ago=50, node=node)
    _alert("still hot", raised_minutes_ago=5, node=node)
    html = viewer_client.get(URL).content.decode()
    assert (
        html.index("still hot") < html.index('id="alerts-history"') < html.index("old and cleared")
    )


def test_critical_active_alerts_are_listed_first(viewer_client, node):
    _alert("a warning", raised_minutes_ago=1, severity="warning")
    _alert("node gone", raised_minutes_ago=30, severity="critical", kind="node_offline")
    html = viewer_client.get(URL).content.decode()
    assert html.index("node gone") < html.index("a warning")


def test_history_shows_raised_and_cleared_times_and_the_duration(viewer_client, node):
    alert = _alert("fan noise", raised_minutes_ago=125, cleared_minutes_ago=5, node=node)
    alert.refresh_from_db()
    html = viewer_client.get(URL).content.decode()
    local = timezone.localtime
    assert local(alert.raised_at).strftime("%Y-%m-%d %H:%M:%S") in html
    assert local(alert.cleared_at).strftime("%Y-%m-%d %H:%M:%S") in html
    assert "2 h" in html


def test_active_alerts_show_how_long_they_have_been_active(viewer_client, node):
    _alert("hot", raised_minutes_ago=3)
    assert "3 min" in viewer_client.get(URL).content.decode()


def test_alerts_link_to_their_node_and_gpu(viewer_client, gpu):
    _alert("gpu hot", raised_minutes_ago=1, node=gpu.node, gpu=gpu)
    html = viewer_client.get(URL).content.decode()
    assert reverse("inventory:gpu", args=[gpu.pk]) in html
    assert reverse("inventory:node", args=[gpu.node.pk]) in html


def test_filter_by_kind(viewer_client, node):
    _alert("too hot", raised_minutes_ago=1, kind="gpu_temperature")
    _alert("node down", raised_minutes_ago=1, kind="node_offline")
    html = viewer_client.get(URL, {"kind": "node_offline"}).content.decode()
    assert "node down" in html and "too hot" not in html


def test_filter_by_node(viewer_client, node):
    other = NodeFactory(name="node-b")
    _alert("on a", raised_minutes_ago=1, node=node)
    _alert("on b", raised_minutes_ago=1, cleared_minutes_ago=0.5, node=other)
    html = viewer_client.get(URL, {"node": "node-b"}).content.decode()
    assert "on b" in html and "on a" not in html


def test_an_unknown_filter_value_filters_nothing(viewer_client, node):
    _alert("on a", raised_minutes_ago=1, node=node)
    response = viewer_client.get(URL, {"node": "no-such-node", "kind": "bogus"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "on a" in html
    assert "Node “no-such-node” is not known: not filtering by it." in html
    assert "Kind “bogus” is not known" in html


def test_history_is_paginated_and_pages_keep_the_filters(viewer_client, node):
    for i in range(55):
        _alert(
            f"cleared {i:02d}", raised_minutes_ago=200 - i, cleared_minutes_ago=100 - i, node=node
        )
    first = viewer_client.get(URL, {"node": "node-a"}).content.decode()
    assert "Page 1 of 2" in first
    assert "cleared 54" in first and "cleared 00" not in first
    assert "?node=node-a&amp;page=2" in first
    second = viewer_client.get(URL, {"node": "node-a", "page": "2"}).content.decode()
    assert "cleared 00" in second and "cleared 54" not in second


def test_empty_page_says_there_are_no_alerts(viewer_client, db):
    html = viewer_client.get(URL).content.decode()
    assert "No active alerts." in html and "No cleared alerts." in html


def test_anonymous_visitor_is_sent_to_log_in(anon_client, db):
    response = anon_client.get(URL)
    assert response.status_code == 302 and "login" in response.url
