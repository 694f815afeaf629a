"""On a simulated fleet our backends show up in the GPU readings as a real GPU would
show them: their claimed memory, under their server pid; memory used by others stays
foreign."""

from __future__ import annotations

import pytest

from agent.loop import Agent
from core.units import GIB
from inventory.probe import SimulatedProbe
from scheduling.models import Deployment, GpuClaim, Instance
from tests.factories import CatalogModelFactory

pytestmark = pytest.mark.django_db


def test_a_running_backend_uses_its_claim_on_the_simulated_gpu(tmp_path, monkeypatch):
    probe = SimulatedProbe("sim-e", "1xA100-80GB", tmp_path)
    agent = Agent("sim-e", "127.0.0.1", probe)
    # pid 4321 is not a backend: nothing to supervise
    monkeypatch.setattr(agent, "_supervise", lambda now, housekeeper: None)
    gpu = agent.node.gpus.get()
    deployment = Deployment.objects.create(model=CatalogModelFactory(), served_name="m")
    instance = Instance.objects.create(
        deployment=deployment, node=agent.node, state="running", server_pid=4321
    )
    GpuClaim.objects.create(
        instance=instance, gpu=gpu, position=0, estimated=9 * GIB, claimed=9 * GIB
    )
    probe.inject(foreign={"0": 5 * GIB})
    agent.tick()
    gpu.refresh_from_db()
    assert {"pid": 4321, "memory_used": 9 * GIB, "name": "llama_cpp.server"} in gpu.processes
    assert 14 * GIB < gpu.memory_used < 15 * GIB  # ours, the foreign program, the driver
    assert 5 * GIB < gpu.foreign_memory < 6 * GIB
    assert gpu.free_for_placement == gpu.memory_total - gpu.reserved - 9 * GIB - gpu.foreign_memory
