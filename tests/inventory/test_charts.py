"""The SVG charts are plain Python: no database, no Django."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from inventory.charts import ChartSpec, nice_step, render_chart, segments, summary, time_ticks

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2025, 3, 4, 10, 0, tzinfo=UTC).timestamp()
END = START + 3600


def _spec(points, **overrides) -> ChartSpec:
    fields = dict(
        title="Utilisation, last hour", points=points, start=START, end=END, y_max=100.0, unit="%"
    )
    fields.update(overrides)
    return ChartSpec(**fields)


def _ramp(count: int = 60, step: float = 60.0) -> list[tuple[float, float]]:
    return [(START + i * step, float(i % 100)) for i in range(count)]


def _paths(svg: str, kind: str) -> list[str]:
    root = ET.fromstring(svg)
    return [p.get("d", "") for p in root.iter(f"{SVG}path") if kind in p.get("class", "")]


def test_it_renders_well_formed_svg_with_a_title():
    root = ET.fromstring(render_chart(_spec(_ramp())))
    assert root.tag == f"{SVG}svg"
    assert root.find(f"{SVG}title").text == "Utilisation, last hour"
    assert root.get("role") == "img"


def test_it_draws_a_line_over_a_filled_area():
    svg = render_chart(_spec(_ramp()))
    lines, areas = _paths(svg, "line"), _paths(svg, "area")
    assert len(lines) == 1 and len(areas) == 1
    assert lines[0].count("L") == 59
    assert areas[0].endswith("Z")


def test_it_says_no_data_when_the_series_is_empty():
    svg = render_chart(_spec([]))
    assert "No data for this range yet" in svg
    assert _paths(svg, "line") == []


def test_it_breaks_the_line_where_the_history_has_a_gap():
    points = _ramp(10) + [(START + 1800 + i * 60.0, 50.0) for i in range(10)]
    svg = render_chart(_spec(points, gap=180.0))
    assert len(_paths(svg, "line")) == 2


def test_a_lone_point_is_still_visible():
    svg = render_chart(_spec([(START + 600, 40.0)]))
    assert len(_paths(svg, "line")) == 1


def test_values_outside_the_range_stay_inside_the_plot():
    svg = render_chart(_spec([(START, -20.0), (START + 60, 250.0)]))
    ys = [float(y) for y in re.findall(r",(-?[\d.]+)", _paths(svg, "line")[0])]
    assert all(14 <= y <= 192 for y in ys)


def test_the_percent_axis_runs_from_0_to_100():
    root = ET.fromstring(render_chart(_spec(_ramp())))
    labels = [t.text for g in root.iter(f"{SVG}g") if "y" in g.get("class", "") for t in g]
    assert labels == ["0%", "20%", "40%", "60%", "80%", "100%"]


def test_the_memory_axis_is_labelled_in_gib_with_round_steps():
    svg = render_chart(_spec(_ramp(), y_max=80.0, unit="GiB", kind="memory"))
    root = ET.fromstring(svg)
    labels = [t.text for g in root.iter(f"{SVG}g") if "axis y" in g.get("class", "") for t in g]
    assert labels == ["0 GiB", "20 GiB", "40 GiB", "60 GiB", "80 GiB"]


def test_time_labels_are_round_local_times():
    berlin = ZoneInfo("Europe/Berlin")
    root = ET.fromstring(render_chart(_spec(_ramp(), tz=berlin)))
    labels = [
        t.text
        for g in root.iter(f"{SVG}g")
        if "axis x" in g.get("class", "")
        for t in g.iter(f"{SVG}text")
    ]
    assert labels == ["11:00", "11:10", "11:20", "11:30", "11:40", "11:50", "12:00"]


def test_a_day_gets_ticks_every_few_hours():
    ticks = time_ticks(START, START + 86400, UTC)
    assert len(ticks) <= 7
    assert all(int(t) % 10800 == 0 for t in ticks)


def test_a_reference_line_is_drawn_with_its_label():
    svg = render_chart(_spec(_ramp(), y_max=80.0, unit="GiB", references=[(79.0, "usable")]))
    assert "stroke-dasharray" in svg and ">usable</text>" in svg


def test_text_in_the_chart_is_escaped():
    svg = render_chart(_spec(_ramp(), title="<script>alert(1)</script>", references=[(5, "a&b")]))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg and "a&amp;b" in svg
    ET.fromstring(svg)


def test_summary_gives_min_mean_max_and_latest():
    text = summary(_spec([(START, 10.0), (START + 60, 30.0), (START + 120, 20.0)]))
    assert text == "Utilisation, last hour: min 10%, mean 20%, max 30%, latest 20%."


def test_segments_split_only_at_gaps_larger_than_the_limit():
    points = [(0.0, 1.0), (60.0, 1.0), (120.0, 1.0), (600.0, 1.0)]
    assert [len(run) for run in segments(points, 180.0)] == [3, 1]
    assert [len(run) for run in segments(points, None)] == [4]


def test_nice_steps_are_round_numbers():
    assert nice_step(100) == 20
    assert nice_step(80) == 20
    assert nice_step(24) == 5
    assert nice_step(141) == 50
    assert nice_step(0) == 1
