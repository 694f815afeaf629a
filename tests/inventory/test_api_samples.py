"""GET /api/v1/gpus/{id}/samples: telemetry by time range and resolution."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from inventory import api as inventory_api
from inventory.choices import Resolution
from inventory.models import GpuSample

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def add_samples(gpu, start: datetime, count: int, step: int, resolution: int) -> None:
    GpuSample.objects.bulk_create(
        GpuSample(
            gpu=gpu,
            ts=start + timedelta(seconds=i * step),
            resolution=resolution,
            utilization=float(i),
            memory_used=i * 1024,
            temperature=50.0,
            power_draw=None,
        )
        for i in range(count)
    )


def get(client, gpu_id, **params):
    return client.get(f"/api/v1/gpus/{gpu_id}/samples", params)


def test_samples_default_to_the_last_hour_at_minute_resolution(viewer_client, gpu):
    now = timezone.now().replace(microsecond=0)
    add_samples(gpu, now - timedelta(minutes=90, seconds=-30), 90, 60, Resolution.MINUTE)
    add_samples(gpu, now - timedelta(minutes=5), 10, 1, Resolution.RAW)
    response = get(viewer_client, gpu.pk)
    assert response.status_code == 200
    body = response.json()
    assert body["resolution"] == 60
    assert len(body["samples"]) == 60
    assert body["truncated"] is False and body["next_start"] is None


def test_samples_are_those_of_the_range_oldest_first(viewer_client, gpu):
    add_samples(gpu, T0, 10, 1, Resolution.RAW)
    start, end = T0 + timedelta(seconds=2), T0 + timedelta(seconds=5)
    body = get(
        viewer_client, gpu.pk, start=start.isoformat(), end=end.isoformat(), resolution=1
    ).json()
    assert [s["utilization"] for s in body["samples"]] == [2.0, 3.0, 4.0]
    assert body["samples"][0] == {
        "ts": "2025-03-01T12:00:02Z",
        "utilization": 2.0,
        "memory_used": 2048,
        "temperature": 50.0,
        "power_draw": None,
    }


def test_naive_times_are_taken_as_utc(viewer_client, gpu):
    add_samples(gpu, T0, 3, 900, Resolution.QUARTER)
    body = get(
        viewer_client,
        gpu.pk,
        start="2025-03-01T12:00:00",
        end="2025-03-01T13:00:00",
        resolution=900,
    ).json()
    assert len(body["samples"]) == 3


def test_samples_of_other_gpus_and_resolutions_are_left_out(viewer_client, gpus):
    add_samples(gpus[0], T0, 3, 60, Resolution.MINUTE)
    add_samples(gpus[1], T0, 3, 60, Resolution.MINUTE)
    add_samples(gpus[0], T0, 3, 1, Resolution.RAW)
    body = get(
        viewer_client,
        gpus[0].pk,
        start=T0.isoformat(),
        end=(T0 + timedelta(hours=1)).isoformat(),
        resolution=60,
    ).json()
    assert len(body["samples"]) == 3


def test_old_ranges_default_to_quarter_hour_means(viewer_client, gpu):
    start = timezone.now() - timedelta(days=20)
    body = get(viewer_client, gpu.pk, start=start.isoformat()).json()
    assert body["resolution"] == 900


def test_samples_are_capped_and_the_answer_says_where_to_go_on(viewer_client, gpu, monkeypatch):
    monkeypatch.setattr(inventory_api, "SAMPLE_LIMIT", 4)
    add_samples(gpu, T0, 6, 1, Resolution.RAW)
    params = {"end": (T0 + timedelta(minutes=1)).isoformat(), "resolution": 1}
    first = get(viewer_client, gpu.pk, start=T0.isoformat(), **params).json()
    assert (first["truncated"], first["limit"], len(first["samples"])) == (True, 4, 4)
    assert first["next_start"] == "2025-03-01T12:00:04Z"
    rest = get(viewer_client, gpu.pk, start=first["next_start"], **params).json()
    assert [s["utilization"] for s in rest["samples"]] == [4.0, 5.0]
    assert rest["truncated"] is False


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"resolution": 30}, "resolution"),
        ({"resolution": "fine"}, "resolution"),
        ({"start": "yesterday"}, "start"),
        ({"end": "2025-13-01T00:00:00Z"}, "end"),
        ({"start": "2025-03-01T13:00:00Z", "end": "2025-03-01T12:00:00Z"}, "end"),
        ({"end": "0001-01-01T00:00:00"}, "end"),
        ({"end": "0001-01-01T00:30:00+01:00"}, "end"),
        ({"start": "0001-01-01T00:00:00"}, "start"),
        ({"start": "9999-12-31T23:59:59-05:00"}, "start"),
        ({"end": "9999-12-31T23:59:59"}, "end"),
    ],
)
def test_bad_sample_queries_are_422_naming_the_parameter(viewer_client, gpu, params, field):
    response = get(viewer_client, gpu.pk, **params)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_samples_of_an_unknown_gpu_are_a_404(viewer_client, db):
    assert get(viewer_client, uuid.uuid4()).status_code == 404


def test_samples_need_authentication(anon_client, gpu):
    assert get(anon_client, gpu.pk).status_code == 401
