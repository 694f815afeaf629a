"""``manage.py fleet``: the fleet in the terminal, like nvidia-smi."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from inventory.choices import NodeStatus
from tests.factories import GpuFactory, NodeFactory


def _run(*args: str) -> str:
    out = StringIO()
    call_command("fleet", *args, stdout=out, no_color=True)
    return out.getvalue()


def test_it_prints_a_header_per_node_and_a_line_per_gpu(gpus):
    lines = _run().splitlines()
    assert lines[0].startswith("node-a  ONLINE  heartbeat ")
    assert "GPU" in lines[1] and "Memory used / total" in lines[1] and "Prio" in lines[1]
    assert len(lines) == 4
    row = lines[2].split()
    assert row[0] == "0" and "NVIDIA" in row[1]
    assert "37%" in lines[2]
    assert "2,048 / 81,920 MiB" in lines[2]
    assert "51°C" in lines[2] and "180/400 W" in lines[2]
    assert lines[2].rstrip().endswith("50  enabled")


def test_heartbeat_age_is_shown_in_words(db):
    NodeFactory(name="slow", last_heartbeat=timezone.now() - timedelta(minutes=3, seconds=5))
    assert "heartbeat 3 min 5 s ago" in _run()


def test_it_shows_only_the_named_node(gpus):
    GpuFactory(node=NodeFactory(name="node-b"))
    output = _run("--node", "node-b")
    assert "node-b" in output and "node-a" not in output


def test_an_unknown_node_is_a_clear_error(node):
    with pytest.raises(CommandError, match="No node named 'nope' \\(known nodes: node-a\\)"):
        _run("--node", "nope")


def test_json_output_is_machine_readable(gpus):
    data = json.loads(_run("--json"))
    (node,) = data["nodes"]
    assert node["name"] == "node-a" and node["status"] == "online"
    assert node["heartbeat_age_s"] >= 0
    assert [g["index"] for g in node["gpus"]] == [0, 1]
    first = node["gpus"][0]
    assert first["memory_total"] == 80 * 1024**3 and first["state"] == "enabled"
    assert first["uuid"].startswith("GPU-")


def test_no_nodes_prints_a_clear_message(db):
    assert "No nodes are registered yet" in _run()
    assert json.loads(_run("--json")) == {"nodes": []}


def test_a_node_without_nvidia_driver_says_so(db):
    NodeFactory(
        name="cpu-box", probe_message="NVML is not available (no NVIDIA driver). Running CPU-only."
    )
    output = _run()
    assert "no GPUs (CPU-only): NVML is not available (no NVIDIA driver)" in output


def test_offline_nodes_and_gpu_errors_are_visible(node):
    node.status = NodeStatus.OFFLINE
    node.last_heartbeat = None
    node.save()
    GpuFactory(node=node, index=0, error="GPU is lost")
    output = _run()
    assert "OFFLINE  no heartbeat yet" in output
    assert "error (GPU is lost)" in output


def test_long_gpu_names_keep_the_columns_aligned(node):
    GpuFactory(node=node, index=0, name="NVIDIA Some Extremely Long Product Name 96GB")
    GpuFactory(node=node, index=1)
    lines = _run().splitlines()
    assert len(lines[2]) == len(lines[3])
    assert "…" in lines[2]
