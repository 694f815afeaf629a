from datetime import timedelta

import pytest
from django.utils import timezone

from inventory import actions
from inventory.choices import AlertKind, NodeStatus
from inventory.models import Alert, Gpu, Node
from inventory.probe import GpuInfo
from tests.factories import GIB, MaintenanceWindowFactory, NodeFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _info(index: int, uuid: str) -> GpuInfo:
    return GpuInfo(index=index, uuid=uuid, name="NVIDIA L4", memory_total=24 * GIB)


def test_registering_creates_the_node_and_its_gpus_once():
    devices = [_info(0, "GPU-a"), _info(1, "GPU-b")]
    first = actions.do_register_node("node-x", "10.0.0.5", devices, "Simulated")
    again = actions.do_register_node("node-x", "10.0.0.6", devices, "Simulated")
    assert first.pk == again.pk
    assert Node.objects.get().address == "10.0.0.6"
    assert list(Gpu.objects.order_by("index").values_list("index", "uuid")) == [
        (0, "GPU-a"),
        (1, "GPU-b"),
    ]


def test_registering_survives_gpus_that_swapped_indexes_and_keeps_their_settings():
    actions.do_register_node("node-x", "h", [_info(0, "GPU-a"), _info(1, "GPU-b")])
    Gpu.objects.filter(uuid="GPU-a").update(priority=90)
    actions.do_register_node("node-x", "h", [_info(0, "GPU-b"), _info(1, "GPU-a")])
    a = Gpu.objects.get(uuid="GPU-a")
    assert (a.index, a.priority) == (1, 90)
    assert Gpu.objects.get(uuid="GPU-b").index == 0


def test_a_gpu_no_longer_probed_is_kept_but_marked_not_present():
    actions.do_register_node("node-x", "h", [_info(0, "GPU-a"), _info(1, "GPU-b")])
    actions.do_register_node("node-x", "h", [_info(0, "GPU-a")])
    gone = Gpu.objects.get(uuid="GPU-b")
    assert not gone.present and gone.index == 1


def test_stale_nodes_go_offline_with_an_alert_and_come_back_on_heartbeat(settings):
    settings.GPUFLEET_HEARTBEAT_TIMEOUT = 15
    node = NodeFactory(last_heartbeat=timezone.now() - timedelta(seconds=20))
    fresh = NodeFactory(last_heartbeat=timezone.now() - timedelta(seconds=5))
    assert [n.pk for n in actions.do_mark_stale_nodes_offline()] == [node.pk]
    node.refresh_from_db()
    fresh.refresh_from_db()
    assert (node.status, fresh.status) == (NodeStatus.OFFLINE, NodeStatus.ONLINE)
    alert = Alert.objects.active().get()
    assert alert.kind == AlertKind.NODE_OFFLINE and "no heartbeat for 20 s" in alert.message

    actions.do_heartbeat(node)
    node.refresh_from_db()
    assert node.status == NodeStatus.ONLINE
    assert not Alert.objects.active().exists()
    assert Alert.objects.get().cleared_at is not None


def test_marking_offline_twice_raises_one_alert(settings):
    settings.GPUFLEET_HEARTBEAT_TIMEOUT = 15
    NodeFactory(last_heartbeat=timezone.now() - timedelta(minutes=5))
    actions.do_mark_stale_nodes_offline()
    actions.do_mark_stale_nodes_offline()
    assert Alert.objects.count() == 1


def test_a_maintenance_window_moves_the_node_in_and_out_of_maintenance():
    node = NodeFactory()
    now = timezone.now()
    MaintenanceWindowFactory(
        node=node, starts_at=now - timedelta(minutes=1), ends_at=now + timedelta(hours=1)
    )
    actions.do_apply_maintenance_windows(now)
    node.refresh_from_db()
    assert node.status == NodeStatus.MAINTENANCE
    actions.do_apply_maintenance_windows(now + timedelta(hours=2))
    node.refresh_from_db()
    assert node.status == NodeStatus.OFFLINE  # its heartbeat is two hours old by then


def test_heartbeat_does_not_end_an_active_maintenance():
    node = NodeFactory(status=NodeStatus.OFFLINE)
    now = timezone.now()
    MaintenanceWindowFactory(
        node=node, starts_at=now - timedelta(minutes=1), ends_at=now + timedelta(hours=1)
    )
    actions.do_heartbeat(node)
    node.refresh_from_db()
    assert node.status == NodeStatus.OFFLINE
    actions.do_apply_maintenance_windows()
    node.refresh_from_db()
    assert node.status == NodeStatus.MAINTENANCE


def test_state_changes_emit_one_event_after_commit(sent_events):
    node = NodeFactory()
    sent_events.clear()
    actions.do_set_draining(node, True)
    assert [e["kind"] for e in sent_events] == ["node.status"]
    assert actions.do_set_draining(node, True) is False  # already draining: no change


def test_registering_again_unchanged_tells_no_page(sent_events):
    devices = [_info(0, "GPU-a"), _info(1, "GPU-b")]
    actions.do_register_node("node-x", "h", devices, "NVML")
    actions.do_register_node("node-x", "h", devices, "NVML")
    assert [e["kind"] for e in sent_events] == ["node.status"]
    actions.do_register_node("node-x", "h", devices[:1], "NVML")  # a GPU disappeared
    assert [e["kind"] for e in sent_events] == ["node.status", "node.status"]
