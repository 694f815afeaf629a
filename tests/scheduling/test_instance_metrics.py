"""/metrics carries each running backend's readings (``scheduling.metrics``): slots,
busy slots, deferred requests, tokens/s and KV use, labelled with the served name, the
instance id and the node, read from the database at scrape time."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from inventory.models import ApiToken
from scheduling import actions
from scheduling.choices import InstanceState
from scheduling.models import Instance

pytestmark = pytest.mark.django_db
URL = reverse("metrics")
READINGS = {
    "slots": 4, "busy": 3, "deferred": 2, "tokens_per_second": 41.5,
    "prompt_tokens_per_second": 300.0, "kv_used": 0.375, "tokens_total": 900,
    "prompt_tokens_total": 5000, "at": 1_700_000_000.0,
}  # fmt: skip
GAUGES = {
    "gpufleet_instance_slots": 4.0,
    "gpufleet_instance_slots_busy": 3.0,
    "gpufleet_instance_requests_deferred": 2.0,
    "gpufleet_instance_tokens_per_second": 41.5,
    "gpufleet_instance_kv_used_ratio": 0.375,
}


@pytest.fixture
def token_client(viewer_user) -> Client:
    _, raw = ApiToken.issue(viewer_user, "prometheus")
    return Client(headers={"Authorization": f"Bearer {raw}"})


@pytest.fixture
def instances(fleet, model_7b, queued, django_capture_on_commit_callbacks):
    """A running instance with readings, one running without (llama-cpp-python), one
    failed with readings left from its run."""
    made = []
    with django_capture_on_commit_callbacks(execute=True):
        for name in ("srv", "py", "gone"):
            backend = "llama_cpp_python" if name == "py" else "llama_server"
            deployment = actions.do_create_deployment(
                model=model_7b, served_name=name, backend=backend
            )
            made.append(deployment.instances.get())
    running, python, gone = made
    Instance.objects.filter(pk=running.pk).update(
        state=InstanceState.RUNNING, readings=READINGS, node=fleet["a"]
    )
    Instance.objects.filter(pk=python.pk).update(state=InstanceState.RUNNING)
    Instance.objects.filter(pk=gone.pk).update(state=InstanceState.FAILED, readings=READINGS)
    return running, python, gone


def scrape(client: Client) -> dict[str, list]:
    response = client.get(URL)
    assert response.status_code == 200
    return {f.name: f.samples for f in text_string_to_metric_families(response.content.decode())}


def test_running_instances_readings_are_gauges_labelled_by_name_instance_and_node(
    token_client, instances
):
    running, _, _ = instances
    metrics = scrape(token_client)
    labels = {"served_name": "srv", "instance_id": str(running.pk), "node": "node-a"}
    for name, value in GAUGES.items():
        (sample,) = metrics[name]  # the failed and the llama-cpp-python ones are left out
        assert sample.labels == labels and sample.value == value, name


def test_an_unknown_rate_is_left_out_rather_than_reported_as_zero(token_client, instances):
    running, _, _ = instances
    Instance.objects.filter(pk=running.pk).update(readings=READINGS | {"tokens_per_second": None})
    metrics = scrape(token_client)
    assert metrics["gpufleet_instance_tokens_per_second"] == []
    assert metrics["gpufleet_instance_slots_busy"][0].value == 3.0


def test_garbage_readings_are_left_out_without_breaking_the_scrape(token_client, instances):
    running, _, _ = instances
    Instance.objects.filter(pk=running.pk).update(readings={"slots": "four", "busy": [1]})
    metrics = scrape(token_client)
    assert all(metrics[name] == [] for name in GAUGES)
    assert "gpufleet_node_up" in metrics


def test_the_gauges_cost_one_query_whatever_the_number_of_instances(
    token_client, instances, django_assert_max_num_queries
):
    from scheduling.metrics import instance_readings

    with django_assert_max_num_queries(1):
        assert len(instance_readings()) == 1
