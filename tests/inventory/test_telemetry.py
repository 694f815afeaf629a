from datetime import timedelta

import pytest
from django.utils import timezone

from inventory import telemetry
from inventory.choices import AlertKind, Resolution
from inventory.models import Alert, Gpu, GpuSample
from inventory.probe import GpuReading
from tests.factories import GIB, GpuFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def gpu(node):
    """A node with a single GPU (the shared fixture has two)."""
    return GpuFactory(node=node, index=0)


def _reading(gpu: Gpu, **kw) -> GpuReading:
    values = {"utilization": 40.0, "memory_used": 3 * GIB, "memory_total": gpu.memory_total}
    values |= {"temperature": 55.0, "power_draw": 200.0}
    return GpuReading(index=gpu.index, uuid=gpu.uuid, **(values | kw))


def test_a_tick_updates_the_rows_stores_samples_and_sends_the_node_rows(node, gpus, sent_events):
    telemetry.record_readings(
        node, [_reading(g, utilization=10.0 * (i + 1)) for i, g in enumerate(gpus)]
    )
    assert [g.utilization for g in Gpu.objects.order_by("index")] == [10.0, 20.0]
    assert GpuSample.objects.filter(resolution=Resolution.RAW).count() == 2
    event = sent_events[-1]
    assert event["kind"] == "node.gpus" and event["node_id"] == str(node.pk)
    assert [r["utilization"] for r in event["rows"]] == [10.0, 20.0]


def test_hot_gpu_raises_one_alert_and_clears_it_below_the_hysteresis(node, gpu, settings):
    settings.GPUFLEET_TEMPERATURE_ALERT_C = 85
    for _ in range(3):
        telemetry.record_readings(node, [_reading(gpu, temperature=91.0)])
    assert Alert.objects.active().filter(kind=AlertKind.GPU_TEMPERATURE).count() == 1
    telemetry.record_readings(node, [_reading(gpu, temperature=82.0)])  # inside hysteresis
    assert Alert.objects.active().exists()
    telemetry.record_readings(node, [_reading(gpu, temperature=70.0)])
    assert not Alert.objects.active().exists()


def test_nvml_errors_raise_an_alert_and_keep_the_last_good_reading(node, gpu):
    telemetry.record_readings(node, [_reading(gpu, utilization=33.0)])
    telemetry.record_readings(
        node, [GpuReading(index=gpu.index, uuid=gpu.uuid, error="NVML: GPU is lost")]
    )
    gpu.refresh_from_db()
    assert gpu.error == "NVML: GPU is lost" and gpu.utilization == 33.0
    alert = Alert.objects.active().get()
    assert alert.kind == AlertKind.GPU_ERROR and "GPU is lost" in alert.message
    telemetry.record_readings(node, [_reading(gpu)])
    assert not Alert.objects.active().exists()


def test_a_gpu_that_disappears_is_flagged_and_alerted(node, gpus):
    telemetry.record_readings(node, [_reading(gpus[0])])
    missing = Gpu.objects.get(pk=gpus[1].pk)
    assert not missing.present
    alert = Alert.objects.active().get()
    assert alert.kind == AlertKind.GPU_MISSING and missing.uuid in alert.message
    telemetry.record_readings(node, [_reading(g) for g in gpus])
    assert Gpu.objects.get(pk=gpus[1].pk).present
    assert not Alert.objects.active().exists()


def _raw(gpu, ts, util):
    return GpuSample(gpu=gpu, ts=ts, resolution=1, utilization=util, memory_used=GIB)


def test_rollup_averages_complete_minutes_only_and_is_idempotent(node, gpu):
    base = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=3)
    samples = [_raw(gpu, base + timedelta(seconds=s), float(s % 60)) for s in range(150)]
    GpuSample.objects.bulk_create(samples)
    now = base + timedelta(seconds=150)
    assert telemetry.rollup([gpu.pk], 1, 60, now) == 2
    assert telemetry.rollup([gpu.pk], 1, 60, now) == 0
    minutes = GpuSample.objects.filter(resolution=60).order_by("ts")
    assert [m.utilization for m in minutes] == [29.5, 29.5]
    assert minutes[0].ts == base


def test_housekeeping_drops_samples_past_retention(node, gpu, settings):
    settings.GPUFLEET_RAW_RETENTION = 600
    now = timezone.now()
    GpuSample.objects.bulk_create(
        [_raw(gpu, now - timedelta(seconds=s), 1.0) for s in (5, 300, 700, 3000)]
    )
    telemetry.housekeeping(node, now)
    left = GpuSample.objects.filter(resolution=1).count()
    assert left == 2
    assert GpuSample.objects.filter(resolution=60).exists()


def test_unknown_uuids_in_readings_are_ignored(node, gpu):
    telemetry.record_readings(node, [_reading(gpu), GpuReading(index=9, uuid="GPU-stranger")])
    assert GpuSample.objects.count() == 1
    assert Gpu.objects.count() == 1
