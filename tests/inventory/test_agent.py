import pytest

from agent.loop import Agent
from inventory.choices import AlertKind
from inventory.models import Alert, Gpu, GpuSample, Node
from inventory.probe import CpuOnlyProbe, SimulatedProbe

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_agent_registers_its_node_and_samples_every_gpu(tmp_path, settings):
    settings.GPUFLEET_STORAGE_ROOTS = [str(tmp_path / "models")]
    agent = Agent("sim-a", "10.1.1.1", SimulatedProbe("sim-a", "2xL40S", tmp_path))
    agent.tick(now=0.0)
    agent.tick(now=1.0)
    node = Node.objects.get(name="sim-a")
    assert node.gpus.count() == 2
    assert node.last_heartbeat is not None
    assert node.cpu_count > 0 and str(tmp_path / "models") in node.disk_free
    assert GpuSample.objects.filter(gpu__node=node).count() >= 2


def test_a_new_gpu_appearing_is_registered_on_the_next_tick(tmp_path):
    probe = SimulatedProbe("sim-b", "2xT4", tmp_path)
    probe.inject(missing=[1])
    agent = Agent("sim-b", "h", probe)
    assert Gpu.objects.count() == 1
    probe.inject()
    agent.tick(now=0.0)
    assert Gpu.objects.filter(present=True).count() == 2
    assert not Alert.objects.active().filter(kind=AlertKind.GPU_MISSING).exists()


def test_a_cpu_only_node_still_heartbeats():
    agent = Agent("cpu-node", "h", CpuOnlyProbe("No NVIDIA driver found. Running CPU-only."))
    agent.tick(now=0.0)
    node = Node.objects.get(name="cpu-node")
    assert node.last_heartbeat is not None
    assert node.probe_message.startswith("No NVIDIA driver found")
