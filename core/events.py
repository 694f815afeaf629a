"""The one sender of live events.

An event is a small typed dict of plain data. ``send`` delivers it after the current
transaction commits:

* cluster (``REDIS_URL``): straight to the channels-redis group every web process reads.
  While Redis cannot be reached (a restart), the event is kept in the ``LiveEvent``
  outbox instead and the housekeeper sends it once Redis is back (``resend_kept``);
  periodic readings, which the next second's supersede, are dropped;
* embedded default: into the ``LiveEvent`` outbox table, which each web process relays
  to its in-memory channel layer (``relay_forever``), so events from the agent and the
  worker reach browsers without Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, TypedDict

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections, transaction
from redis.exceptions import RedisError

from core.models import LiveEvent

GROUP = "fleet"
# Sent every second or two, each one superseding the last: not kept while Redis is down.
PERIODIC = frozenset({"node.gpus", "instance.readings", "gateway.waiting"})
RESEND_BATCH = 500
UNREACHABLE = (RedisError, OSError)
logger = logging.getLogger(__name__)

EventKind = Literal[
    "node.gpus",
    "node.status",
    "alerts.changed",
    "maintenance.changed",
    "gpu.settings",
    "download.changed",
    "deployment.changed",
    "instance.changed",
    "instance.readings",
    "key.changed",
    "gateway.waiting",
]


class Event(TypedDict, total=False):
    id: str
    kind: EventKind
    sent_at: float
    node_id: str
    file_id: str
    deployment_id: str
    instance_id: str
    key_id: str
    waiting: int
    rows: list[dict[str, Any]]


def make_event(kind: EventKind, **fields: Any) -> Event:
    event: Event = {"id": uuid.uuid4().hex, "kind": kind, "sent_at": time.time()}
    event.update(fields)  # type: ignore[typeddict-item]
    return event


def send(kind: EventKind, **fields: Any) -> None:
    event = make_event(kind, **fields)
    # robust: a delivery that fails is logged, never raised into the committed caller
    transaction.on_commit(lambda: deliver(event), robust=True)


def send_many(kind: EventKind, many: list[dict[str, Any]]) -> None:
    """Several events of one kind after commit, written in one go (a placement pass)."""
    batch = [make_event(kind, **fields) for fields in many]
    if batch:
        transaction.on_commit(lambda: deliver_many(batch), robust=True)


def deliver_many(batch: list[Event]) -> None:
    if settings.REDIS_URL:
        for event in batch:
            deliver(event)
    else:
        LiveEvent.objects.bulk_create([LiveEvent(payload=event) for event in batch])


def deliver(event: Event) -> None:
    if not settings.REDIS_URL:
        LiveEvent.objects.create(payload=event)
        return
    try:
        _group_send(event)
    except UNREACHABLE as exc:
        if event.get("kind") in PERIODIC:
            return
        logger.warning("Redis unreachable (%s): %s kept to be sent later", exc, event.get("kind"))
        LiveEvent.objects.create(payload=event)


def _group_send(event: Event | dict[str, Any]) -> None:
    layer = get_channel_layer()
    assert layer is not None
    async_to_sync(layer.group_send)(GROUP, {"type": "fleet.event", "event": event})


def resend_kept() -> int:
    """Cluster: send the events kept while Redis was unreachable, oldest first, and
    forget those sent; stops at the first that fails (Redis still down). Run by the
    housekeeper only, so no event goes out twice. Returns how many were sent."""
    if not settings.REDIS_URL:
        return 0
    kept = list(LiveEvent.objects.order_by("id").values_list("id", "payload")[:RESEND_BATCH])
    sent: list[int] = []
    for event_id, payload in kept:
        try:
            _group_send(payload)
        except UNREACHABLE:
            break
        sent.append(event_id)
    if sent:
        LiveEvent.objects.filter(id__in=sent).delete()
        logger.info("sent %d live event(s) kept while Redis was unreachable", len(sent))
    return len(sent)


def fresh_connection_call(function: Any, *args: Any) -> Any:
    """Run ``function`` in a worker thread the way Django runs a request: connections that
    broke (a database restart) or aged are replaced first and closed after, so a pool
    thread never keeps a dead connection."""
    close_old_connections()
    try:
        return function(*args)
    finally:
        close_old_connections()


async def in_thread(function: Any, *args: Any) -> Any:
    """``function(*args)`` off the event loop, with a fresh connection (see above)."""
    return await sync_to_async(fresh_connection_call, thread_sensitive=False)(function, *args)


def _fetch_after(last_id: int, limit: int = 500) -> list[tuple[int, Event]]:
    rows = LiveEvent.objects.filter(id__gt=last_id).order_by("id").values_list("id", "payload")
    return list(rows[:limit])


def _latest_id() -> int:
    latest = LiveEvent.objects.order_by("-id").values_list("id", flat=True).first()
    return latest or 0


class Relay:
    """Polls the outbox and hands new events to this process's channel layer (the live
    pages) and to the callbacks registered with ``hand_to`` (the overview's hub, which
    takes each event once for all its sockets: ``inventory.fanout``)."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.callbacks: list[Callable[[Event], None]] = []

    def hand_to(self, callback: Callable[[Event], None]) -> None:
        """Also give every relayed event to ``callback`` (on the event loop; it must not
        block). Registered once when Django starts."""
        if callback not in self.callbacks:
            self.callbacks.append(callback)

    def ensure_started(self) -> None:
        if settings.REDIS_URL:
            return
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self.run())

    async def run(self) -> None:
        layer = get_channel_layer()
        assert layer is not None
        last_id = await in_thread(_latest_id)
        while True:
            try:
                batch = await in_thread(_fetch_after, last_id)
            except Exception:  # the database may be briefly locked or restarting
                logger.exception("event relay: reading the outbox failed")
                batch = []
            for event_id, payload in batch:
                last_id = event_id
                for callback in self.callbacks:
                    callback(payload)
                await layer.group_send(GROUP, {"type": "fleet.event", "event": payload})
            if len(batch) < 500:
                await asyncio.sleep(settings.GPUFLEET_EVENT_POLL)


relay = Relay()
