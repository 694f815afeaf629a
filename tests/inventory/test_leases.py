"""One housekeeper at a time: a lease in the database, renewed by its holder, taken
over once it lapses, handed over at once by a clean stop."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from agent.loop import LEASE_RENEW, LEASE_TTL, Agent
from inventory import leases
from inventory.models import Lease
from inventory.probe.simulated import SimulatedProbe

pytestmark = pytest.mark.django_db


def test_the_first_process_holds_the_lease_and_the_others_stand_by():
    assert leases.hold("role", "a", ttl=10)
    assert not leases.hold("role", "b", ttl=10)
    assert leases.hold("role", "a", ttl=10), "the holder renews it"
    assert leases.holder_of("role") == "a"


def test_a_lapsed_lease_is_taken_over():
    assert leases.hold("role", "a", ttl=10)
    Lease.objects.filter(name="role").update(expires_at=timezone.now() - timedelta(seconds=1))
    assert leases.hold("role", "b", ttl=10)
    assert not leases.hold("role", "a", ttl=10), "the old holder is told it lost it"
    assert leases.holder_of("role") == "b"


def test_a_released_lease_is_free_at_once():
    leases.hold("role", "a", ttl=10)
    leases.release("role", "a")
    assert leases.hold("role", "b", ttl=10)


def _agent(name: str, tmp_path, monkeypatch) -> Agent:
    probe = SimulatedProbe(name, "1xA100-80GB", tmp_path)
    return Agent(name, "127.0.0.1", probe=probe)


def test_only_one_agent_runs_the_fleet_wide_passes(tmp_path, monkeypatch, settings):
    settings.GPUFLEET_STORAGE_ROOTS = [str(tmp_path)]
    runs: list[str] = []
    monkeypatch.setattr("scheduling.supervisor.fleet_housekeeping", lambda: runs.append("pass"))
    first, second = _agent("node-1", tmp_path, monkeypatch), _agent("node-2", tmp_path, monkeypatch)
    first.tick(now=0.0)
    second.tick(now=0.0)
    assert (first.is_housekeeper, second.is_housekeeper) == (True, False)
    assert runs == ["pass"]
    Lease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))  # first died
    second.tick(now=LEASE_TTL + 0.1)
    assert second.is_housekeeper and runs == ["pass", "pass"]


def test_lapses_in_counts_down_to_the_lapse_and_is_zero_for_a_free_lease():
    assert leases.lapses_in("role") == 0.0
    leases.hold("role", "a", ttl=10)
    assert 9.0 < leases.lapses_in("role") <= 10.0
    Lease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert leases.lapses_in("role") == 0.0


def test_an_agent_standing_by_looks_again_when_the_lease_would_lapse(
    tmp_path, monkeypatch, settings
):
    settings.GPUFLEET_STORAGE_ROOTS = [str(tmp_path)]
    monkeypatch.setattr("scheduling.supervisor.fleet_housekeeping", lambda: None)
    first, second = _agent("node-1", tmp_path, monkeypatch), _agent("node-2", tmp_path, monkeypatch)
    first.tick(now=0.0)
    Lease.objects.update(expires_at=timezone.now() + timedelta(seconds=1.5))  # in 1.5 s
    looks: list[float] = []
    hold = leases.hold
    monkeypatch.setattr(leases, "hold", lambda *a: looks.append(1.0) or hold(*a))
    second.tick(now=0.0)
    assert looks and not second.is_housekeeper
    Lease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))  # first died
    second.tick(now=1.2)
    assert len(looks) == 1 and not second.is_housekeeper, "not before it would lapse"
    second.tick(now=1.7)
    assert len(looks) == 2 and second.is_housekeeper, "taken over just after it lapsed"


def test_a_clean_stop_hands_the_lease_over_within_a_renewal(tmp_path, monkeypatch, settings):
    settings.GPUFLEET_STORAGE_ROOTS = [str(tmp_path)]
    monkeypatch.setattr("scheduling.supervisor.fleet_housekeeping", lambda: None)
    first, second = _agent("node-1", tmp_path, monkeypatch), _agent("node-2", tmp_path, monkeypatch)
    first.tick(now=0.0)
    second.tick(now=0.0)
    leases.release(leases.HOUSEKEEPER, first.holder)  # first stops cleanly
    second.tick(now=LEASE_RENEW + 0.1)
    assert second.is_housekeeper, "not left waiting for a lapse that a release made moot"
