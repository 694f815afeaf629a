"""Keeps the gateway's in-memory state in step with the database, off the request path.

One task per process listens to the scheduler's live events on the channel layer (the
same ``fleet`` group the dashboard uses: channels-redis in a cluster, the outbox relay
in the embedded default). An ``instance.changed`` or ``deployment.changed`` event marks
the routing table dirty and one reload follows (events that arrive meanwhile fold into
the next one); ``key.changed`` reloads the key cache. A full reload also runs every
``RESYNC`` seconds, in case an event was lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.layers import get_channel_layer

from core import events
from gateway.table import Backend, Route

logger = logging.getLogger("gpufleet.gateway")
RESYNC = 10.0
ROUTE_KINDS = frozenset({"instance.changed", "deployment.changed"})


def load_routes() -> list[Route]:
    """Every deployment not being deleted, with its instances that have not stopped."""
    from scheduling.models import Deployment, Instance

    rows = Deployment.objects.exclude(desired_state="deleting").values_list(
        "id", "served_name", "desired_state", "priority", "replicas", "min_replicas",
        "max_queue", "cold_start_timeout", "model__display_name", "kind", "parallel",
    )  # fmt: skip
    backends: dict[str, list[Backend]] = {}
    instances = Instance.objects.exclude(state="stopped").values_list(
        "id", "deployment_id", "state", "node__address", "port", "reason", "node__name"
    )
    for pk, deployment_id, state, address, port, reason, node in instances.order_by("created_at"):
        backend = Backend(str(pk), state, address or "127.0.0.1", port, reason[:500], node or "")
        backends.setdefault(str(deployment_id), []).append(backend)
    return [
        Route(
            deployment_id=str(pk), served_name=name, running=desired == "running",
            priority=priority, replicas=replicas, min_replicas=min_replicas,
            max_queue=max_queue, cold_start_timeout=float(timeout),
            backends=tuple(backends.get(str(pk), ())), model=model or "", kind=kind,
            parallel=parallel,
        )
        for (
            pk, name, desired, priority, replicas, min_replicas, max_queue, timeout, model,
            kind, parallel,
        ) in rows
    ]  # fmt: skip


class Feed:
    """Runs ``reload_routes`` after route events and ``reload_keys`` after key events."""

    def __init__(
        self,
        reload_routes: Callable[[], Awaitable[None]],
        reload_keys: Callable[[], Awaitable[None]],
    ) -> None:
        self.reload_routes = reload_routes
        self.reload_keys = reload_keys
        self.dirty = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._listen()), loop.create_task(self._reloader())]

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()

    async def _listen(self) -> None:
        layer = get_channel_layer()
        assert layer is not None
        channel = await layer.new_channel()
        await layer.group_add(events.GROUP, channel)
        events.relay.ensure_started()  # embedded default: this process reads the outbox
        while True:
            try:
                message: dict[str, Any] = await asyncio.wait_for(layer.receive(channel), RESYNC)
            except TimeoutError:
                self.dirty.set()
                await layer.group_add(events.GROUP, channel)  # membership expires
                continue
            except Exception:
                logger.exception("gateway feed: reading events failed")
                await asyncio.sleep(1.0)
                continue
            kind = (message.get("event") or {}).get("kind", "")
            if kind in ROUTE_KINDS:
                self.dirty.set()
            elif kind == "key.changed":
                await self.safely(self.reload_keys)

    async def _reloader(self) -> None:
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            await self.safely(self.reload_routes)

    @staticmethod
    async def safely(reload: Callable[[], Awaitable[None]]) -> None:
        try:
            await reload()
        except Exception:  # the database may be restarting: the next event or resync retries
            logger.exception("gateway feed: reload failed")
            await asyncio.sleep(0.5)
