"""The gateway's routing table: served name → deployment facts and its instances.

Plain data, no Django. It is rebuilt from the database after the scheduler's live
events (``feed``), never read from the database per request. ``pick`` chooses the
running instance with the fewest requests in flight through this gateway.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

ROUTABLE = "running"
# Instance states from which an instance is on its way (no new demand needed); a pending
# instance counts only while placement has not refused it (no reason yet).
COMING = frozenset({"scheduled", "waiting_for_files", "starting"})
RESTARTING = frozenset({"failed", "unreachable"})
WAITING = "Waiting: "  # scheduling.placement_pass.WAITING_PREFIX: room is being made for it


@dataclass(frozen=True, slots=True)
class Backend:
    instance_id: str
    state: str
    host: str
    port: int | None
    reason: str = ""
    node: str = ""

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Route:
    deployment_id: str
    served_name: str
    running: bool  # desired state is running
    priority: int
    replicas: int
    min_replicas: int
    max_queue: int
    cold_start_timeout: float
    backends: tuple[Backend, ...]
    model: str = ""
    kind: str = "chat"  # chat, embedding or reranker: which paths it answers
    parallel: int = 1  # slots per instance

    def routable(self) -> list[Backend]:
        return [b for b in self.backends if b.state == ROUTABLE and b.port]

    def coming(self) -> list[Backend]:
        return [
            b
            for b in self.backends
            if b.state in COMING
            or (b.state == "pending" and (not b.reason or b.reason.startswith(WAITING)))
        ]

    def restarting(self) -> list[Backend]:
        return [b for b in self.backends if b.state in RESTARTING]

    def refusal(self) -> str:
        """Why the deployment cannot be placed now: the reasons of its pending instances."""
        reasons = [b.reason for b in self.backends if b.state == "pending" and b.reason]
        return reasons[0] if reasons else ""


@dataclass
class Table:
    routes: dict[str, Route] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)  # instance id → requests
    avoid: dict[str, float] = field(default_factory=dict)  # instance id → until (monotonic)
    version: int = 0

    def replace(self, routes: Iterable[Route]) -> None:
        self.routes = {route.served_name: route for route in routes}
        self.version += 1

    def get(self, served_name: str) -> Route | None:
        return self.routes.get(served_name)

    def names(self) -> list[str]:
        return sorted(self.routes)

    def pick(self, route: Route, exclude: Iterable[str] = ()) -> Backend | None:
        """Least outstanding requests among the running instances (ties: instance id);
        instances that just failed a request are used only when nothing else is left."""
        skip = set(exclude)
        now = time.monotonic()
        candidates = [b for b in route.routable() if b.instance_id not in skip]
        healthy = [b for b in candidates if self.avoid.get(b.instance_id, 0.0) <= now]
        pool = healthy or candidates
        if not pool:
            return None
        return min(pool, key=lambda b: (self.in_flight.get(b.instance_id, 0), b.instance_id))

    def begin(self, backend: Backend) -> None:
        self.in_flight[backend.instance_id] = self.in_flight.get(backend.instance_id, 0) + 1

    def end(self, backend: Backend) -> None:
        left = self.in_flight.get(backend.instance_id, 0) - 1
        if left > 0:
            self.in_flight[backend.instance_id] = left
        else:
            self.in_flight.pop(backend.instance_id, None)

    def suspect(self, backend: Backend, seconds: float = 5.0) -> None:
        self.avoid[backend.instance_id] = time.monotonic() + seconds

    def busy_instances(self) -> list[str]:
        return [instance_id for instance_id, count in self.in_flight.items() if count > 0]
