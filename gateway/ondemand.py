"""Requests that wait for an instance: cold starts from zero and scale-ups.

A request for a served name with no running instance joins that name's FIFO queue
(at most ``max_queue``; more get 429) and, unless an instance is already on its way,
asks the scheduler for one (``scheduling.actions.do_demand``: the normal placement and
start path). Twenty requests arriving at once ask once. When the routing table shows a
running instance, the queue is released in arrival order; when the only instances left
are refused by placement, the queue gets 503 with the placement's reason; a request
that waited ``cold_start_timeout`` gets 504.

A request that finds every running instance with all its slots busy and
``SCALE_UP_AT`` requests or more waiting beyond them (``parallel - 1 + SCALE_UP_AT`` in
flight) asks for one more instance (up to ``replicas``), and is served meanwhile by the
least busy one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from gateway.errors import GatewayError
from gateway.table import Backend, Route, Table

logger = logging.getLogger("gpufleet.gateway")
SCALE_UP_AT = 4
ASK_AGAIN_AFTER = 5.0  # seconds before the same deployment is asked again

Demand = Callable[[str, int], Awaitable[object]]


class OnDemand:
    def __init__(
        self,
        table: Table,
        demand: Demand,
        on_wait: Callable[[], None] = lambda: None,
        after_demand: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.table = table
        self.demand = demand
        self.on_wait = on_wait  # a request started waiting (the gateway watches closely)
        self.after_demand = after_demand  # re-read the routes once the demand was placed
        # Served names whose placement ran since their requests began to wait: only then
        # does a refusal on the table answer them (an older one may be stale).
        self.fresh: set[str] = set()
        self.queues: dict[str, deque[asyncio.Future[None]]] = {}
        self.asked: dict[str, float] = {}  # served name → when we last asked (monotonic)
        self.tasks: set[asyncio.Task[object]] = set()

    def waiting(self, served_name: str) -> int:
        return len(self.queues.get(served_name, ()))

    async def backend(self, route: Route, exclude: tuple[str, ...] = ()) -> tuple[Backend, float]:
        """A running instance for ``route`` and how long the request waited for it."""
        backend = self.table.pick(route, exclude)
        if backend is not None:
            self._maybe_scale_up(route, backend)
            return backend, 0.0
        started = time.monotonic()
        await self._wait(route)
        route = self.table.get(route.served_name) or route
        backend = self.table.pick(route, exclude)
        if backend is None:  # released, but gone again before we could use it
            raise GatewayError(503, f"No instance of {route.served_name} is running.")
        return backend, time.monotonic() - started

    async def _wait(self, route: Route) -> None:
        if not route.running:
            raise GatewayError(
                503, f"{route.served_name} is stopped: an operator must start it.",
                code="deployment_stopped",
            )  # fmt: skip
        queue = self.queues.setdefault(route.served_name, deque())
        if len(queue) >= route.max_queue:
            raise GatewayError(
                429, f"{len(queue)} requests already wait for {route.served_name}; try later.",
                code="queue_full", headers={"Retry-After": "5"},
            )  # fmt: skip
        if not queue:
            self.fresh.discard(route.served_name)  # a new wait: old refusals do not count
        if not route.coming():
            self._ask(route, len(route.routable()) + 1)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(future)
        self.on_wait()
        try:
            await asyncio.wait_for(asyncio.shield(future), route.cold_start_timeout)
        except TimeoutError:
            raise GatewayError(
                504, f"{route.served_name} did not start within "
                f"{route.cold_start_timeout:.0f} s.", code="cold_start_timeout",
            ) from None  # fmt: skip
        finally:
            if future in queue:
                queue.remove(future)
            if not queue:
                self.queues.pop(route.served_name, None)

    def _maybe_scale_up(self, route: Route, chosen: Backend) -> None:
        if self.table.in_flight.get(chosen.instance_id, 0) < route.parallel - 1 + SCALE_UP_AT:
            return  # the least busy instance still has room
        have = len(route.routable()) + len(route.coming())
        if have < route.replicas:
            self._ask(route, have + 1)

    def _ask(self, route: Route, wanted: int) -> None:
        now = time.monotonic()
        if now - self.asked.get(route.served_name, -ASK_AGAIN_AFTER) < ASK_AGAIN_AFTER:
            return
        self.asked[route.served_name] = now
        task = asyncio.get_running_loop().create_task(self._demand(route, wanted))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _demand(self, route: Route, wanted: int) -> object:
        """Ask the scheduler (its placement pass runs before the call returns), then
        re-read the routes: what waits is released, or refused with a fresh reason."""
        try:
            result = await self.demand(route.deployment_id, wanted)
        except Exception:
            logger.exception("asking for an instance of %s failed", route.served_name)
            self.asked.pop(route.served_name, None)  # the next request asks again
            return None
        self.fresh.add(route.served_name)
        if self.after_demand is not None:
            await self.after_demand()
        return result

    def wake(self) -> None:
        """After the routing table changed: release or fail what waits."""
        for name, queue in list(self.queues.items()):
            route = self.table.get(name)
            error = self._verdict(route, name in self.fresh)
            if route is not None and error is None and not route.routable():
                continue
            for future in queue:
                if not future.done():
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(error)
            if route is not None and route.routable():
                self.asked.pop(name, None)

    @staticmethod
    def _verdict(route: Route | None, fresh: bool) -> GatewayError | None:
        if route is None:
            return GatewayError(404, "The deployment was deleted.", code="model_not_found")
        if not route.running:
            return GatewayError(503, f"{route.served_name} was stopped.", code="deployment_stopped")
        if route.routable() or route.coming() or route.restarting():
            return None
        reason = route.refusal()
        if reason and fresh:
            return GatewayError(
                503, f"No capacity for {route.served_name}: {reason}", code="no_capacity"
            )
        return None
