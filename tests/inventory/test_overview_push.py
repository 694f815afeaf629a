"""The overview's live push (``inventory.fanout``): each tick rendered once per process
and the same message sent to every browser of a view; GPU rows only to browsers that
show the node expanded, nothing about nodes a browser's filter hides; and the socket
that tells which nodes its browser expanded."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator

from core import events
from inventory import fanout
from inventory.choices import NodeStatus
from inventory.consumers import FleetConsumer
from inventory.fleet_view import OpenNodes, OverviewFilter, short_id
from inventory.models import Gpu, Node
from inventory.presenters import gpu_rows
from tests.factories import GpuFactory, NodeFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture(autouse=True)
def _summary_once_an_hour(monkeypatch):
    """The summary goes out once a second, whatever the ticks: keep it out of the counts."""
    monkeypatch.setattr(fanout, "SUMMARY_EVERY", 3600.0)
    monkeypatch.setattr(fanout, "LINE_EVERY", 0.0)


EVERYTHING, DEFAULT_OPEN = OverviewFilter(), OpenNodes()


class Browser:
    def __init__(self, view: OverviewFilter = EVERYTHING, open_nodes: OpenNodes = DEFAULT_OPEN):
        self.view, self.open_nodes = view, open_nodes
        self.received: list[str] = []

    async def send(self, text_data: str | None = None, bytes_data=None, close=False) -> None:
        self.received.append(text_data or "")


def _fleet(count: int = 9) -> list[Node]:
    nodes = [NodeFactory(name=f"n{i:03d}") for i in range(count)]
    for node in nodes:
        for index in range(2):
            GpuFactory(node=node, index=index)
    return nodes


def _tick(node: Node, utilization: float) -> events.Event:
    rows = gpu_rows(Gpu.objects.filter(node=node).with_claims().order_by("index"))
    for row in rows:
        row["utilization"] = utilization
    return events.make_event("node.gpus", node_id=str(node.pk), rows=rows)


async def _hub_with(browsers: list[Browser]) -> fanout.Hub:
    hub = fanout.Hub(asyncio.get_running_loop())
    for browser in browsers:
        await hub.add(browser)
        hub.ready(browser)
    await hub._flush()  # loads the fleet; nothing to send yet
    for browser in browsers:
        browser.received.clear()
    return hub


async def _push(hub: fanout.Hub, *items: events.Event) -> int:
    """Post the events, flush once; returns how many fragments the flush rendered."""
    before = hub.renderer.renders
    for item in items:
        hub.batch.add(item)  # as ``post`` does, without its timer
    await hub._flush()
    return hub.renderer.renders - before


def _opened(*nodes: Node) -> OpenNodes:
    return OpenNodes(mode="closed", flipped=frozenset(short_id(str(n.pk)) for n in nodes))


async def test_a_tick_is_rendered_once_however_many_browsers_watch():
    nodes = await asyncio.to_thread(_fleet)
    ticks = [await asyncio.to_thread(_tick, node, 50.0 + i) for i, node in enumerate(nodes[:3])]
    one = [Browser(open_nodes=_opened(nodes[0]))]
    many = [Browser(open_nodes=_opened(nodes[0])) for _ in range(40)]

    renders_for_one = await _push(await _hub_with(one), *ticks)
    renders_for_many = await _push(await _hub_with(many), *ticks)

    assert renders_for_one == renders_for_many == 3 + 1  # three lines, one node's rows
    assert len({browser.received[0] for browser in many}) == 1
    assert all(len(browser.received) == 1 for browser in many)


async def test_rows_of_a_node_are_rendered_once_for_all_views_that_expand_it():
    nodes = await asyncio.to_thread(_fleet)
    browsers = [Browser(open_nodes=_opened(nodes[0], nodes[i])) for i in range(1, 6)]
    hub = await _hub_with(browsers)
    tick = await asyncio.to_thread(_tick, nodes[0], 64.0)
    assert await _push(hub, tick) == 2  # its line and its rows, for five views


async def test_collapsed_nodes_get_their_line_and_expanded_ones_their_rows_too():
    nodes = await asyncio.to_thread(_fleet)
    collapsed, expanded = Browser(), Browser(open_nodes=_opened(nodes[0]))
    hub = await _hub_with([collapsed, expanded])
    await _push(hub, await asyncio.to_thread(_tick, nodes[0], 71.0))
    (line_only,) = collapsed.received
    (with_rows,) = expanded.received
    assert f'id="node-{nodes[0].pk}-line" data-sampled=' in line_only
    assert "-gpus" not in line_only
    assert f'<tbody id="node-{nodes[0].pk}-gpus" hx-swap-oob="true">' in with_rows
    assert with_rows.count('data-util="71"') == 2


async def test_nodes_a_filter_hides_send_nothing():
    nodes = await asyncio.to_thread(_fleet)
    elsewhere = Browser(view=OverviewFilter(q="n005"), open_nodes=OpenNodes(mode="open"))
    hub = await _hub_with([elsewhere])
    await _push(hub, await asyncio.to_thread(_tick, nodes[0], 12.0))
    assert not any(str(nodes[0].pk) in message for message in elsewhere.received)


async def test_an_unchanged_line_is_not_sent_again():
    nodes = await asyncio.to_thread(_fleet)
    browser = Browser()
    hub = await _hub_with([browser])
    tick = await asyncio.to_thread(_tick, nodes[0], 33.0)
    await _push(hub, tick)
    await _push(hub, events.make_event("node.gpus", node_id=tick["node_id"], rows=tick["rows"]))
    assert sum(f'id="node-{nodes[0].pk}-line"' in m for m in browser.received) == 1


async def test_a_line_goes_out_at_most_every_few_seconds_and_rows_every_tick(monkeypatch):
    monkeypatch.setattr(fanout, "LINE_EVERY", 3600.0)
    nodes = await asyncio.to_thread(_fleet)
    browser = Browser(open_nodes=_opened(nodes[0]))
    hub = await _hub_with([browser])
    for utilization in (20.0, 40.0):
        await _push(hub, await asyncio.to_thread(_tick, nodes[0], utilization))
    first, second = browser.received
    assert "-line" in first and "-line" not in second
    assert 'data-util="40"' in second


async def test_a_burst_of_ticks_of_one_node_sends_the_latest_only():
    nodes = await asyncio.to_thread(_fleet)
    browser = Browser(open_nodes=_opened(nodes[0]))
    hub = await _hub_with([browser])
    first = await asyncio.to_thread(_tick, nodes[0], 10.0)
    latest = await asyncio.to_thread(_tick, nodes[0], 90.0)
    await _push(hub, first, latest)
    (message,) = browser.received
    assert 'data-util="90"' in message and 'data-util="10"' not in message


async def test_a_node_that_starts_matching_the_filter_is_swapped_in_with_the_summary():
    nodes = await asyncio.to_thread(_fleet)
    watching_offline = Browser(view=OverviewFilter(state="offline"))
    hub = await _hub_with([watching_offline])
    await asyncio.to_thread(Node.objects.filter(pk=nodes[2].pk).update, status=NodeStatus.OFFLINE)
    await _push(hub, events.make_event("node.status", node_id=str(nodes[2].pk)))
    (message,) = watching_offline.received
    section = message.split(f'<section class="node" id="node-{nodes[2].pk}"')[1]
    assert section.startswith(f' data-node="{short_id(str(nodes[2].pk))}" hx-swap-oob="true">')
    assert "Offline" in section.split("</section>")[0]
    assert 'id="fleet-summary" class="fleet-summary" hx-swap-oob="true"' in message
    assert message.count('<section class="node') == 1  # only the node that changed


async def test_a_new_node_sends_the_whole_list_once_per_view():
    await asyncio.to_thread(_fleet, 2)
    browsers = [Browser() for _ in range(5)]
    hub = await _hub_with(browsers)
    new = await asyncio.to_thread(NodeFactory, name="n999")
    renders = await _push(hub, events.make_event("node.status", node_id=str(new.pk)))
    assert all('<div id="fleet" hx-swap-oob="true"' in b.received[0] for b in browsers)
    assert all("n999" in b.received[0] for b in browsers)
    assert renders == 2  # the summary and the list, for five browsers of one view


# --- the socket --------------------------------------------------------------------


async def _connect(user, path: str = "/ws/fleet/", cookie: str = "") -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(FleetConsumer.as_asgi(), path)
    communicator.scope["user"] = user
    if cookie:
        communicator.scope["cookies"] = {"gf_nodes": cookie}
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def test_the_socket_sends_a_node_with_its_rows_when_its_browser_expands_it(viewer_user):
    nodes = await asyncio.to_thread(_fleet)
    communicator = await _connect(viewer_user)
    resync = await communicator.receive_from(timeout=5)
    assert "-gpus" not in resync  # nine nodes: collapsed
    opened = f"auto:{short_id(str(nodes[4].pk))}"
    await communicator.send_to(text_data=json.dumps({"nodes": opened}))
    html = await communicator.receive_from(timeout=5)
    assert html.startswith(f'<section class="node open" id="node-{nodes[4].pk}"')
    assert f'id="node-{nodes[4].pk}-gpus"' in html and html.count("<section") == 1
    await communicator.disconnect()


async def test_the_filter_of_the_socket_survives_live_updates(viewer_user, settings):
    settings.GPUFLEET_EVENT_POLL = 0.05
    nodes = await asyncio.to_thread(_fleet, 2)
    communicator = await _connect(viewer_user, "/ws/fleet/?q=n001")
    resync = await communicator.receive_from(timeout=5)
    assert f'id="node-{nodes[0].pk}" data-node="{short_id(str(nodes[0].pk))}" hidden' in resync
    ticks = [await asyncio.to_thread(_tick, node, 5.0) for node in nodes]
    for tick in ticks:
        await communicator.send_input({"type": "fleet.event", "event": tick})
    html = ""
    while f'id="node-{nodes[1].pk}-gpus"' not in html:
        html += await communicator.receive_from(timeout=5)
    assert str(nodes[0].pk) not in html
    await communicator.disconnect()


async def test_a_change_between_the_resync_and_the_first_push_is_not_lost():
    nodes = await asyncio.to_thread(_fleet, 2)
    browser = Browser()
    hub = fanout.Hub(asyncio.get_running_loop())
    await hub.add(browser)  # the hub reads the fleet before the socket's resync
    hub.ready(browser)
    await asyncio.to_thread(Node.objects.filter(pk=nodes[1].pk).update, status=NodeStatus.OFFLINE)
    await _push(hub, events.make_event("node.status", node_id=str(nodes[1].pk)))
    (message,) = browser.received
    assert f'id="node-{nodes[1].pk}"' in message and "Offline" in message
