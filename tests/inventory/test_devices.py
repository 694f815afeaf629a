import pytest

from inventory.devices import DeviceSelectionError, cuda_visible_devices
from tests.factories import GpuFactory, NodeFactory


def test_devices_are_uuids_in_priority_order_then_index(node):
    g0 = GpuFactory(node=node, index=0, priority=10)
    g1 = GpuFactory(node=node, index=1, priority=90)
    g2 = GpuFactory(node=node, index=2, priority=10)
    assert cuda_visible_devices([g0, g2, g1]) == f"{g1.uuid},{g0.uuid},{g2.uuid}"


def test_disabled_gpus_are_refused(node):
    ok = GpuFactory(node=node, index=0)
    off = GpuFactory(node=node, index=1, enabled=False)
    with pytest.raises(DeviceSelectionError, match="is disabled"):
        cuda_visible_devices([ok, off])


def test_gpus_of_two_nodes_or_missing_gpus_are_refused(node):
    other = GpuFactory(node=NodeFactory(), index=0)
    here = GpuFactory(node=node, index=0)
    with pytest.raises(DeviceSelectionError, match="several nodes"):
        cuda_visible_devices([here, other])
    gone = GpuFactory(node=node, index=1, present=False)
    with pytest.raises(DeviceSelectionError, match="not present"):
        cuda_visible_devices([gone])


def test_no_gpus_means_an_empty_value(db):
    assert cuda_visible_devices([]) == ""
