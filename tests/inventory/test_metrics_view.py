"""/metrics: Prometheus text with the DCGM exporter's names and labels, token required."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from inventory.choices import NodeStatus
from inventory.models import ApiToken, Gpu, Node
from tests.factories import GIB, GpuFactory, NodeFactory

URL = reverse("metrics")


@pytest.fixture
def token_client(viewer_user) -> Client:
    _, raw = ApiToken.issue(viewer_user, "prometheus")
    return Client(headers={"Authorization": f"Bearer {raw}"})


def scrape(client: Client) -> dict[str, list]:
    response = client.get(URL)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    families = text_string_to_metric_families(response.content.decode())
    return {f.name: f.samples for f in families}


def by_uuid(samples: list) -> dict[str, float]:
    return {s.labels["UUID"]: s.value for s in samples}


def test_metrics_without_a_token_are_401(anon_client, gpus):
    response = anon_client.get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_metrics_with_a_wrong_token_are_401(gpus):
    client = Client(headers={"Authorization": "Bearer gpf_nope"})
    assert client.get(URL).status_code == 401


def test_a_logged_in_session_is_not_enough_for_metrics(viewer_client, gpus):
    assert viewer_client.get(URL).status_code == 401


def test_metrics_use_dcgm_names_labels_and_units(token_client, gpu):
    Gpu.objects.filter(pk=gpu.pk).update(
        utilization=42.0, memory_used=3 * GIB, temperature=61.0, power_draw=250.5
    )
    metrics = scrape(token_client)
    util = next(s for s in metrics["DCGM_FI_DEV_GPU_UTIL"] if s.labels["UUID"] == gpu.uuid)
    assert util.labels == {
        "gpu": "0",
        "UUID": gpu.uuid,
        "device": "nvidia0",
        "modelName": "NVIDIA A100-SXM4-80GB",
        "Hostname": "node-a",
    }
    assert util.value == 42.0
    assert by_uuid(metrics["DCGM_FI_DEV_FB_USED"])[gpu.uuid] == 3 * 1024
    assert by_uuid(metrics["DCGM_FI_DEV_FB_FREE"])[gpu.uuid] == 77 * 1024
    assert by_uuid(metrics["DCGM_FI_DEV_GPU_TEMP"])[gpu.uuid] == 61.0
    assert by_uuid(metrics["DCGM_FI_DEV_POWER_USAGE"])[gpu.uuid] == 250.5


def test_metrics_report_every_reporting_gpu(token_client, gpus):
    metrics = scrape(token_client)
    assert set(by_uuid(metrics["DCGM_FI_DEV_GPU_UTIL"])) == {g.uuid for g in gpus}
    assert {s.labels["gpu"] for s in metrics["DCGM_FI_DEV_GPU_UTIL"]} == {"0", "1"}


def test_missing_and_silent_gpus_are_left_out(token_client, node, gpus):
    missing = GpuFactory(node=node, index=2, present=False)
    stale = GpuFactory(node=node, index=3, sampled_at=timezone.now() - timedelta(minutes=5))
    never = GpuFactory(node=node, index=4, sampled_at=None)
    reported = set(by_uuid(scrape(token_client)["DCGM_FI_DEV_GPU_UTIL"]))
    assert reported == {g.uuid for g in gpus}
    assert not reported & {missing.uuid, stale.uuid, never.uuid}


def test_readings_the_probe_could_not_take_are_left_out(token_client, gpu):
    Gpu.objects.filter(pk=gpu.pk).update(temperature=None, power_draw=None)
    metrics = scrape(token_client)
    assert gpu.uuid not in by_uuid(metrics["DCGM_FI_DEV_GPU_TEMP"])
    assert gpu.uuid not in by_uuid(metrics["DCGM_FI_DEV_POWER_USAGE"])
    assert gpu.uuid in by_uuid(metrics["DCGM_FI_DEV_GPU_UTIL"])


def test_gpufleet_gauges_report_enabled_gpus_and_nodes_up(token_client, gpus):
    Gpu.objects.filter(pk=gpus[1].pk).update(enabled=False)
    NodeFactory(name="node-down", status=NodeStatus.OFFLINE)
    metrics = scrape(token_client)
    assert by_uuid(metrics["gpufleet_gpu_enabled"]) == {gpus[0].uuid: 1.0, gpus[1].uuid: 0.0}
    up = {s.labels["Hostname"]: s.value for s in metrics["gpufleet_node_up"]}
    assert up == {"node-a": 1.0, "node-down": 0.0}


def test_an_empty_fleet_still_answers(token_client):
    assert Node.objects.count() == 0
    metrics = scrape(token_client)
    assert metrics["DCGM_FI_DEV_GPU_UTIL"] == []


def test_metrics_only_answer_get(token_client, db):
    assert token_client.post(URL).status_code == 405


def test_metrics_include_the_gateways_series_by_served_name(token_client, db):
    from gateway.usage import Outcome, Usage

    Usage().record(
        Outcome("key", "dep", "metrics-model", 200, prompt_tokens=5, completion_tokens=7,
                ttft=0.02, queue_wait=1.5, cold_start=1.5)
    )  # fmt: skip
    text = token_client.get("/metrics").content.decode()
    name = 'served_name="metrics-model"'
    assert f'gpufleet_gateway_requests_total{{{name},status="200"}}' in text
    assert f'gpufleet_gateway_tokens_total{{kind="completion",{name}}}' in text
    assert f"gpufleet_gateway_time_to_first_token_seconds_count{{{name}}}" in text
    assert f"gpufleet_gateway_queue_wait_seconds_count{{{name}}}" in text
    assert f"gpufleet_gateway_cold_start_seconds_count{{{name}}}" in text
