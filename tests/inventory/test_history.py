"""Reading GPU history from GpuSample at the right resolution, and thinning it out."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from inventory.choices import Resolution
from inventory.history import RANGES, downsample, format_duration, gap_seconds, load_history
from inventory.models import GpuSample
from tests.factories import GpuFactory


@pytest.fixture
def now() -> datetime:
    return timezone.now().replace(microsecond=0, second=30)


def _minute_start(moment: datetime) -> datetime:
    return moment.replace(second=0)


def _sample(gpu, ts: datetime, resolution: int, util: float = 10.0, mem: int = 1024**3):
    return GpuSample.objects.create(
        gpu=gpu, ts=ts, resolution=resolution, utilization=util, memory_used=mem
    )


# --- plain functions --------------------------------------------------------------------


def test_downsample_keeps_a_short_series_unchanged():
    points = [(float(i), float(i)) for i in range(100)]
    assert downsample(points, 0, 100, max_points=300) == points


def test_downsample_averages_into_at_most_max_points():
    points = [(float(t), 50.0 + (10 if t % 2 else -10)) for t in range(3600)]
    thinned = downsample(points, 0, 3600, max_points=300)
    assert len(thinned) == 300
    assert all(v == pytest.approx(50.0) for _, v in thinned)
    assert [t for t, _ in thinned] == sorted(t for t, _ in thinned)


def test_downsample_leaves_a_gap_in_the_history_empty():
    points = [(float(t), 1.0) for t in range(0, 1000)] + [
        (float(t), 1.0) for t in range(3000, 3600)
    ]
    thinned = downsample(points, 0, 3600, max_points=360)
    assert not any(1000 < t < 3000 for t, _ in thinned)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "–"),
        (0, "0 s"),
        (42.7, "42 s"),
        (60, "1 min"),
        (192, "3 min 12 s"),
        (7200, "2 h"),
        (7500, "2 h 5 min"),
        (86400 * 3 + 3600 * 4 + 5, "3 d 4 h"),
        (-5, "0 s"),
    ],
)
def test_format_duration_reads_like_a_person_would_say_it(seconds, text):
    assert format_duration(seconds) == text


# --- reading from the database -----------------------------------------------------------


def test_last_hour_is_the_minute_series_plus_raw_samples_newer_than_the_last_minute_row(gpu, now):
    last_minute = _minute_start(now) - timedelta(minutes=5)
    for i in range(30):
        _sample(gpu, last_minute - timedelta(minutes=i), Resolution.MINUTE, util=20)
    for i in range(0, 600, 10):  # raw samples of the last ten minutes
        _sample(gpu, now - timedelta(seconds=i), Resolution.RAW, util=80)
    history = load_history(gpu, "hour", now=now)
    minute_points = [s for s in history.samples if s.utilization == 20]
    raw_points = [s for s in history.samples if s.utilization == 80]
    assert len(minute_points) == 30
    first_raw_allowed = (last_minute + timedelta(minutes=1)).timestamp()
    assert raw_points and all(s.t >= first_raw_allowed for s in raw_points)
    assert len(raw_points) == sum(
        1
        for i in range(0, 600, 10)
        if (now - timedelta(seconds=i)).timestamp() >= first_raw_allowed
    )
    assert [s.t for s in history.samples] == sorted(s.t for s in history.samples)


def test_minute_rows_are_placed_in_the_middle_of_their_minute(gpu, now):
    ts = _minute_start(now) - timedelta(minutes=3)
    _sample(gpu, ts, Resolution.MINUTE)
    history = load_history(gpu, "hour", now=now)
    assert history.samples[0].t == ts.timestamp() + 30


def test_without_minute_rows_the_hour_is_the_raw_samples(gpu, now):
    for i in range(5):
        _sample(gpu, now - timedelta(seconds=i), Resolution.RAW)
    assert len(load_history(gpu, "hour", now=now).samples) == 5


def test_last_day_reads_the_minute_series_and_ignores_quarter_rows(gpu, now):
    for hours in (2, 10, 23):
        _sample(gpu, _minute_start(now) - timedelta(hours=hours), Resolution.MINUTE, util=30)
    _sample(gpu, _minute_start(now) - timedelta(hours=25), Resolution.MINUTE, util=30)
    _sample(gpu, now.replace(minute=0, second=0) - timedelta(hours=1), Resolution.QUARTER, util=99)
    history = load_history(gpu, "day", now=now)
    assert [s.utilization for s in history.samples] == [30, 30, 30]
    assert history.resolution == Resolution.MINUTE


def test_last_week_reads_the_quarter_hour_series(gpu, now):
    _sample(gpu, now.replace(minute=0, second=0) - timedelta(days=3), Resolution.QUARTER, util=40)
    history = load_history(gpu, "week", now=now)
    assert [s.utilization for s in history.samples] == [40]


def test_history_belongs_to_one_gpu(gpu, now):
    other = GpuFactory(node=gpu.node, index=7)
    _sample(other, now - timedelta(seconds=5), Resolution.RAW)
    _sample(gpu, now - timedelta(seconds=5), Resolution.RAW)
    assert len(load_history(gpu, "hour", now=now).samples) == 1


def test_series_picks_a_field_and_scales_it(gpu, now):
    _sample(gpu, now - timedelta(seconds=1), Resolution.RAW, util=55, mem=3 * 1024**3)
    history = load_history(gpu, "hour", now=now)
    assert [v for _, v in history.series("memory_used", 1024**3)] == [3.0]
    assert [v for _, v in history.series("utilization")] == [55.0]


def test_an_unknown_range_is_a_key_error(gpu):
    with pytest.raises(KeyError):
        load_history(gpu, "fortnight")


def test_gaps_are_wider_than_the_spacing_of_the_samples(gpu, now):
    for name in RANGES:
        history = load_history(gpu, name, now=now)
        assert gap_seconds(history, 300) >= 3 * history.resolution
