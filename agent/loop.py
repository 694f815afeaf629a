"""The node agent's loop: each tick runs the node-local work of every app (GPU telemetry
and the heartbeat from ``inventory``, stalled downloads from ``models_app``, this node's
backends from ``scheduling.supervisor``) and, in the one agent holding the housekeeper
lease, the fleet-wide passes (liveness of the other nodes, maintenance windows, the
events kept while Redis was away, scheduling's housekeeping). ``manage.py agent`` runs
``Agent.run``."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from types import FrameType

import psutil
from django.conf import settings
from django.db import OperationalError, close_old_connections
from django.utils import timezone

from core import events
from inventory import actions, leases, telemetry
from inventory.models import Node
from inventory.probe import Probe, get_probe
from inventory.probe.simulated import SimulatedProbe
from models_app.actions import do_resume_stalled
from scheduling.supervisor import Supervisor, simulated_workload

logger = logging.getLogger("gpufleet.agent")
FACTS_EVERY = 10.0
LIVENESS_EVERY = 5.0
HOUSEKEEPING_EVERY = 60.0
DOWNLOADS_EVERY = 10.0  # look for downloads whose worker died (see models_app.actions)
REDISCOVER_EVERY = 30.0
# The fleet-wide passes run in one agent at a time (inventory.leases): renewed every
# LEASE_RENEW s and lapsing LEASE_TTL s after its holder stopped renewing. The agents
# standing by look every LEASE_RENEW s (a clean stop's release is seen that soon) and
# just after it would lapse, so one of them takes over within LEASE_TTL s + a tick.
LEASE_RENEW = 2.0
LEASE_TTL = 6.0
LEASE_LOOK_MIN = 0.2  # seconds: the earliest an agent standing by looks again
RETRY_MAX = 10.0  # longest wait between ticks that fail (backoff doubles from the interval)


def host_facts(storage_roots: list[str]) -> actions.HostFacts:
    memory = psutil.virtual_memory()
    disk_free = {}
    for root in storage_roots:
        path = Path(root)
        path.mkdir(parents=True, exist_ok=True)
        disk_free[root] = psutil.disk_usage(str(path)).free
    return actions.HostFacts(
        cpu_count=psutil.cpu_count() or 0,
        ram_total=memory.total,
        ram_available=memory.available,
        disk_free=disk_free,
    )


def _supervisor(node: Node, probe: Probe) -> Supervisor:
    if isinstance(probe, SimulatedProbe):
        probe.workload = lambda: simulated_workload(node)
    return Supervisor(node)


class Agent:
    def __init__(self, node_name: str, address: str, probe: Probe | None = None) -> None:
        self.node_name = node_name
        self.address = address
        self.probe = probe or get_probe(node_name)
        self.stop = threading.Event()
        self._due: dict[str, float] = {"rediscover": time.monotonic() + REDISCOVER_EVERY}
        self.node: Node = self.register()
        self.supervisor = _supervisor(self.node, self.probe)
        self.holder = f"{node_name}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.is_housekeeper = False

    def register(self) -> Node:
        devices = self.probe.devices()
        node = actions.do_register_node(self.node_name, self.address, devices, self.probe.message)
        self._known = {d.uuid for d in devices}
        logger.debug("agent for %s: %s", node.name, self.probe.message)
        return node

    def _is_due(self, name: str, every: float, now: float) -> bool:
        if now >= self._due.get(name, 0.0):
            self._due[name] = now + every
            return True
        return False

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        read_at = timezone.now()  # the readings' time: what happened after is not in them
        readings = self.probe.read()
        if self._is_due("rediscover", REDISCOVER_EVERY, now) or any(
            r.uuid and r.uuid not in self._known for r in readings
        ):
            self.node = self.register()
        telemetry.record_readings(self.node, readings, read_at)
        facts = None
        if self._is_due("facts", FACTS_EVERY, now):
            facts = host_facts(settings.GPUFLEET_STORAGE_ROOTS)
        self.node = actions.do_heartbeat(self.node, facts)
        housekeeper = self._housekeeper(now)
        if housekeeper and self._is_due("liveness", LIVENESS_EVERY, now):
            actions.do_mark_stale_nodes_offline()
            actions.do_apply_maintenance_windows()
        if housekeeper:
            events.resend_kept()  # what could not reach Redis while it restarted
        if self._is_due("housekeeping", HOUSEKEEPING_EVERY, now):
            telemetry.housekeeping(self.node)
        if self._is_due("downloads", DOWNLOADS_EVERY, now):
            stall = timedelta(seconds=settings.GPUFLEET_DOWNLOAD_STALL_AFTER)
            do_resume_stalled(self.node, after=stall)
        self._supervise(now, housekeeper)

    def _housekeeper(self, now: float) -> bool:
        """Whether this agent runs the fleet-wide passes now: one agent at a time, elected
        with a lease renewed every ``LEASE_RENEW`` s; another takes over when it lapses,
        ``LEASE_TTL`` s after its holder's death (a clean stop hands it over at once)."""
        if self._is_due("lease", LEASE_RENEW, now):
            self.is_housekeeper = leases.hold(leases.HOUSEKEEPER, self.holder, LEASE_TTL)
            if not self.is_housekeeper:  # stand by until the holder's lease would lapse
                lapse = leases.lapses_in(leases.HOUSEKEEPER) + 0.05  # just after it lapsed
                self._due["lease"] = now + min(max(lapse, LEASE_LOOK_MIN), LEASE_RENEW)
        return self.is_housekeeper

    def _supervise(self, now: float, housekeeper: bool) -> None:
        """Keep this node's backends up (scheduling.supervisor); a failure there must not
        stop telemetry and heartbeats."""
        try:
            self.supervisor.tick(self.node, now, housekeeper=housekeeper)
        except OperationalError:
            raise
        except Exception:
            logger.exception("supervising backends failed; trying again next tick")

    def run(self) -> None:
        interval = settings.GPUFLEET_SAMPLE_INTERVAL
        next_tick = time.monotonic()
        failures = 0
        while not self.stop.is_set():
            close_old_connections()
            try:
                self.tick()
                failures = 0
            except Exception:  # the database or Redis restarting: never exit, retry
                failures += 1
                logger.exception("agent tick failed (%d in a row); retrying", failures)
                self.stop.wait(min(RETRY_MAX, interval * 2 ** min(failures, 5)))
            next_tick += interval
            delay = next_tick - time.monotonic()
            if delay < 0:  # fell behind: do not try to catch up with a burst
                next_tick, delay = time.monotonic(), 0
            self.stop.wait(delay)
        self.probe.close()
        try:
            leases.release(leases.HOUSEKEEPER, self.holder)  # another agent takes over now
        except OperationalError:
            logger.warning("could not hand the housekeeper lease over; it lapses by itself")

    def install_signal_handlers(self) -> None:
        def _stop(signum: int, frame: FrameType | None) -> None:
            logger.info("agent stopping (signal %s)", signum)
            self.stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
