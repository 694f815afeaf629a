"""The overview at fleet size: the summary's figures, the filter in the query string,
and nodes collapsed to one line (by default above 8 nodes, or as the browser's
``gf_nodes`` cookie says)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from inventory.choices import NodeStatus
from inventory.fleet_view import COOKIE, OpenNodes, OverviewFilter, short_id
from inventory.live import Fleet
from tests.factories import GIB, AlertFactory, GpuFactory, NodeFactory

pytestmark = pytest.mark.django_db
URL = reverse("inventory:overview")


def _fleet(count: int, gpus: int = 2) -> list:
    nodes = [NodeFactory(name=f"n{i:03d}") for i in range(count)]
    for node in nodes:
        for index in range(gpus):
            GpuFactory(node=node, index=index, memory_used=10 * GIB)
    return nodes


def _section(page: str, node) -> str:
    return page.split(f'id="node-{node.pk}"')[1].split("</section>")[0]


def test_the_summary_counts_gpus_by_state_memory_alerts_and_nodes_by_status():
    a, b, c = _fleet(3)
    b.status = NodeStatus.OFFLINE
    b.save()
    c.status = NodeStatus.DRAINING
    c.save()
    broken = a.gpus.get(index=1)
    broken.error, broken.memory_used = "GPU is lost", 0
    broken.save()
    disabled = c.gpus.get(index=0)
    disabled.enabled = False
    disabled.save()
    AlertFactory(node=a, severity="critical")
    AlertFactory(node=b)
    AlertFactory(node=b, cleared_at="2026-01-01T00:00Z")

    summary = Fleet.load().summary()

    assert summary["gpus"] == 6
    assert dict(summary["gpu_states"]) == {"enabled": 4, "disabled": 1, "error": 1, "missing": 0}
    assert summary["mem_used"] == 5 * 10 * GIB
    assert summary["mem_total"] == 6 * 80 * GIB
    assert summary["mem_free"] == 6 * 80 * GIB - 5 * 10 * GIB
    assert (summary["alerts"], summary["alerts_critical"], summary["alerts_warning"]) == (2, 1, 1)
    counts = {status: n for status, _, n in summary["node_states"]}
    assert counts == {"online": 1, "offline": 1, "maintenance": 0, "draining": 1}


def test_the_page_shows_the_summary_above_the_nodes(viewer_client):
    _fleet(2)
    page = viewer_client.get(URL).content.decode()
    assert page.index('id="fleet-summary"') < page.index('id="fleet"')
    summary = page.split('id="fleet-summary"')[1].split("</section>")[0]
    assert '<p class="big">4</p>' in summary  # GPUs
    assert "4 enabled" in summary and "2 online" in summary


def test_a_small_fleet_shows_every_node_expanded(viewer_client):
    nodes = _fleet(8)
    page = viewer_client.get(URL).content.decode()
    for node in nodes:
        assert f'id="node-{node.pk}-gpus"' in page
        assert 'aria-expanded="true"' in _section(page, node)


def test_a_large_fleet_shows_nodes_collapsed_to_one_line(viewer_client):
    nodes = _fleet(9)
    page = viewer_client.get(URL).content.decode()
    assert 'id="gpu-' not in page and "-gpus" not in page
    section = _section(page, nodes[0])
    assert f'id="node-{nodes[0].pk}-line"' in section
    assert "2× NVIDIA A100-SXM4-80GB" in section and "mem 20 / 160 GiB" in section
    assert 'aria-expanded="false"' in section


def test_the_cookie_expands_the_nodes_the_browser_opened(viewer_client):
    nodes = _fleet(9)
    viewer_client.cookies[COOKIE] = f"closed:{short_id(str(nodes[3].pk))}"
    page = viewer_client.get(URL).content.decode()
    assert f'id="node-{nodes[3].pk}-gpus"' in page
    assert page.count("-gpus") == 1


def test_the_cookie_can_collapse_a_small_fleet(viewer_client):
    _fleet(2)
    viewer_client.cookies[COOKIE] = "closed:"
    assert "-gpus" not in viewer_client.get(URL).content.decode()


def test_the_filter_keeps_hidden_nodes_as_empty_placeholders(viewer_client):
    a, b = _fleet(2)
    b.status = NodeStatus.OFFLINE
    b.save()
    page = viewer_client.get(URL, {"state": "offline"}).content.decode()
    assert f'id="node-{a.pk}" data-node="{short_id(str(a.pk))}" hidden>' in page
    assert b.name in page and a.name not in page.split('id="fleet"')[1]
    assert "1 of 2 nodes match" in page
    assert 'ws-connect="/ws/fleet/?state=offline"' in page


@pytest.mark.parametrize(
    ("params", "shown"),
    [
        ({"q": "n001"}, {"n001"}),
        ({"q": "h100"}, {"n002"}),
        ({"state": "alerting"}, {"n000"}),
        ({"state": "faulty"}, {"n001"}),
        ({"state": "bogus"}, {"n000", "n001", "n002"}),
    ],
)
def test_nodes_filter_by_name_gpu_model_alerts_and_faults(params, shown):
    a, b, c = _fleet(3)
    AlertFactory(node=a)
    b.gpus.filter(index=0).update(present=False)
    c.gpus.update(name="NVIDIA H100 80GB HBM3")
    fleet = Fleet.load()
    view = OverviewFilter.parse(params)
    visible = {e["facts"]["name"] for e in fleet.entries(view, OpenNodes()) if e["visible"]}
    assert visible == shown


def test_an_htmx_filter_request_gets_only_the_live_part(viewer_client):
    _fleet(2)
    response = viewer_client.get(URL, {"q": "n000"}, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith(
        '<div hx-ext="ws" ws-connect="/ws/fleet/?q=n000" id="live-root">'
    )
    assert "<nav" not in html


def test_a_garbled_cookie_falls_back_to_the_default():
    assert OpenNodes.parse("nonsense") == OpenNodes()
    assert OpenNodes.parse("open:xyz.0123456789ab").flipped == frozenset({"0123456789ab"})
