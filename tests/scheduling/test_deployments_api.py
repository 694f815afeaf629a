"""/api/v1/deployments and /api/v1/instances: who may do what, bad input with the field
named and nothing written, and every operation."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.utils import timezone

from models_app.choices import DownloadState
from scheduling.models import Deployment, Instance, InstanceRun
from tests.factories import ModelFileFactory

URL = "/api/v1/deployments"
pytestmark = pytest.mark.django_db


def call(client: Client, method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body) if body is not None else None
    response = getattr(client, method)(url, data, content_type="application/json")
    return response.status_code, (response.json() if response.content else {})


def fields(body: dict) -> dict[str, str]:
    return {error["field"]: error["message"] for error in body["errors"]}


@pytest.fixture
def ready(fleet, model_7b):
    ModelFileFactory(model=model_7b, node=fleet["a"], state=DownloadState.READY)
    return model_7b


@pytest.fixture
def created(operator_client, ready, queued, django_capture_on_commit_callbacks) -> dict:
    with django_capture_on_commit_callbacks(execute=True):
        status, body = call(
            operator_client, "post", URL, {"model_id": str(ready.pk), "served_name": "seven"}
        )
    assert status == 201, body
    return body


def test_anonymous_calls_get_401_and_viewers_cannot_change_anything(
    anon_client, viewer_client, ready
):
    assert call(anon_client, "get", URL)[0] == 401
    body = {"model_id": str(ready.pk), "served_name": "x"}
    status, answer = call(viewer_client, "post", URL, body)
    assert status == 403 and "operators" in answer["detail"]
    assert call(viewer_client, "get", URL)[0] == 200
    assert not Deployment.objects.exists()


def test_a_deployment_is_created_and_placed_at_once(operator_client, created, fleet):
    # placement runs after commit (here: after the test's capture), so ask again
    status, detail = call(operator_client, "get", f"{URL}/{created['id']}")
    assert status == 200
    (instance,) = detail["instances"]
    assert instance["state"] == "scheduled" and instance["node"] == "node-a"
    assert instance["claims"][0]["claimed"] > 6 * 1024**3  # 7B at Q8_0, 4k context
    assert instance["estimated"]["CUDA0"] == instance["claims"][0]["estimated"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"n_ctx": 65536}, "n_ctx"),
        ({"extra_options": {"model": "/etc/passwd"}}, "extra_options"),
        ({"extra_options": {"n_threads": "many"}}, "extra_options"),
        ({"replicas": -1}, "replicas"),
        ({"cache_type": "q8_0"}, "cache_type"),
        ({"node_labels": {"zone": "mars"}}, "node_labels"),
        ({"only_gpus": ["00000000-0000-0000-0000-000000000000"]}, "only_gpus"),
        ({"parallel": 4, "backend": "llama_cpp_python"}, "parallel"),
        ({"parallel": 65}, "parallel"),
        ({"backend": "vllm"}, "backend"),
        ({"kind": "image"}, "kind"),
        ({"kind": "reranker", "backend": "llama_cpp_python"}, "kind"),
        ({"kind": "chat", "pooling": "mean"}, "pooling"),
        ({"pooling": "max"}, "pooling"),
        ({"cache_ram": -1}, "cache_ram"),
        ({"cache_ram": 256, "backend": "llama_cpp_python"}, "cache_ram"),
        ({"extra_options": {"cache_reuse": "256"}, "backend": "llama_cpp_python"}, "extra_options"),
        ({"served_name": "has space"}, "served_name"),
        ({"policy": "random"}, "policy"),
    ],
)
def test_bad_settings_are_refused_with_the_field_named_and_nothing_written(
    operator_client, ready, extra, field
):
    body = {"model_id": str(ready.pk), "served_name": "seven", **extra}
    status, answer = call(operator_client, "post", URL, body)
    assert status == 422, answer
    assert field in fields(answer), answer
    assert not Deployment.objects.exists() and not Instance.objects.exists()


def test_an_unknown_model_is_404_and_a_taken_name_409(operator_client, created, ready):
    missing = {"model_id": "00000000-0000-0000-0000-000000000000", "served_name": "y"}
    assert call(operator_client, "post", URL, missing)[0] == 404
    status, answer = call(
        operator_client, "post", URL, {"model_id": str(ready.pk), "served_name": "seven"}
    )
    assert status == 409 and "seven" in answer["detail"]
    assert Deployment.objects.count() == 1


def test_a_served_name_taken_in_another_case_is_409_naming_the_taken_one(
    operator_client, created, ready
):
    body = {"model_id": str(ready.pk), "served_name": "SEVEN"}
    status, answer = call(operator_client, "post", URL, body)
    assert (status, answer) == (409, {"detail": "A deployment already serves 'seven'."})
    assert list(Deployment.objects.values_list("served_name", flat=True)) == ["seven"]


def test_a_name_taken_between_the_check_and_the_insert_is_still_409(
    operator_client, created, ready, monkeypatch
):
    """The database's constraint decides a race; the answer is the same 409."""
    from scheduling import models
    from scheduling.api import deployments

    real, calls = deployments.served_name_taken, []

    def misses_first(name: str) -> str | None:
        calls.append(name)
        return None if len(calls) == 1 else real(name)

    monkeypatch.setattr(deployments, "served_name_taken", misses_first)
    monkeypatch.setattr(models, "served_name_taken", lambda name, but=None: None)
    body = {"model_id": str(ready.pk), "served_name": "Seven"}
    status, answer = call(operator_client, "post", URL, body)
    assert (status, answer) == (409, {"detail": "A deployment already serves 'seven'."})
    assert Deployment.objects.count() == 1


def test_a_dry_run_shows_where_it_would_go_and_claims_nothing(operator_client, ready, fleet):
    body = {"model_id": str(ready.pk), "served_name": "dry", "n_ctx": 8192}
    status, answer = call(operator_client, "post", f"{URL}/preview", body)
    assert status == 200 and answer["fits"] is True
    assert answer["placement"]["node"] == "node-a" and not answer["placement"]["needs_download"]
    small = fleet["gpus"][2]
    small.memory_used = 20 * 1024**3  # someone else's processes
    small.save()
    tight = {**body, "only_gpus": [str(small.pk)]}
    status, answer = call(operator_client, "post", f"{URL}/preview", tight)
    assert status == 200 and answer["fits"] is False
    assert any("GPU 0 on node-b: needs" in line for line in answer["reasons"])
    assert not Deployment.objects.exists()


def test_scale_stop_start_and_delete(
    operator_client, created, queued, django_capture_on_commit_callbacks
):
    url = f"{URL}/{created['id']}"
    with django_capture_on_commit_callbacks(execute=True):
        status, body = call(operator_client, "post", f"{url}/scale", {"replicas": 3})
    assert status == 200 and len(body["instances"]) == 3
    with django_capture_on_commit_callbacks(execute=True):
        status, body = call(operator_client, "post", f"{url}/stop")
    assert status == 200 and body["desired_state"] == "stopped" and body["instances"] == []
    with django_capture_on_commit_callbacks(execute=True):
        status, body = call(operator_client, "post", f"{url}/start")
    assert status == 200 and len(body["instances"]) == 3
    with django_capture_on_commit_callbacks(execute=True):
        status, body = call(operator_client, "delete", url)
    assert status == 202
    assert call(operator_client, "get", url)[0] == 404
    status, body = call(operator_client, "post", f"{url}/scale", {"replicas": -2})
    assert status == 422 or status == 404


def test_settings_can_be_changed_and_bad_changes_change_nothing(operator_client, created):
    url = f"{URL}/{created['id']}"
    status, body = call(operator_client, "patch", url, {"priority": 90, "n_ctx": 8192})
    assert status == 200 and (body["priority"], body["n_ctx"]) == (90, 8192)
    status, body = call(operator_client, "patch", url, {"priority": 10, "n_ctx": 10**6})
    assert status == 422 and "n_ctx" in fields(body)
    status, body = call(operator_client, "patch", url, {"served_name": "other"})
    assert status == 422
    deployment = Deployment.objects.get(pk=created["id"])
    assert (deployment.priority, deployment.n_ctx, deployment.served_name) == (90, 8192, "seven")


def test_instances_runs_and_logs(operator_client, created, tmp_path):
    instance_id = created["instances"][0]["id"]
    status, rows = call(operator_client, "get", f"{URL}/{created['id']}/instances")
    assert status == 200 and [row["id"] for row in rows] == [instance_id]
    log = tmp_path / "run.log"
    log.write_text("".join(f"line {n}\n" for n in range(300)))
    instance = Instance.objects.get(pk=instance_id)
    InstanceRun.objects.create(
        instance=instance, number=1, log_path=str(log), exit_code=1, ended_at=timezone.now()
    )
    status, body = call(operator_client, "get", f"/api/v1/instances/{instance_id}/logs?lines=3")
    assert status == 200 and body["lines"] == ["line 297", "line 298", "line 299"]
    status, runs = call(operator_client, "get", f"/api/v1/instances/{instance_id}/runs")
    assert status == 200 and runs[0]["outcome"] == "exit code 1"
    assert call(operator_client, "get", f"/api/v1/instances/{instance_id}/logs?run=9")[0] == 404
    assert (
        call(operator_client, "get", "/api/v1/instances/00000000-0000-0000-0000-000000000000")[0]
        == 404
    )


@pytest.mark.parametrize(
    "change",
    [
        {"priority": "7"},
        {"priority": True},
        {"priority": 7.0},
        {"n_ctx": "256"},
        {"idle_timeout": "60"},
        {"cold_start_timeout": True},
        {"max_queue": 1.0},
        {"flash_attn": "yes"},
        {"allow_cpu_offload": 1},
        {"allow_multi_gpu": "true"},
        {"priority": None},
    ],
)
def test_settings_changes_of_the_wrong_type_are_refused_and_change_nothing(
    operator_client, created, change
):
    (field,) = change
    status, body = call(operator_client, "patch", f"{URL}/{created['id']}", change)
    assert status == 422, body
    assert field in fields(body)
    deployment = Deployment.objects.get(pk=created["id"])
    assert (deployment.priority, deployment.n_ctx, deployment.flash_attn) == (50, 4096, False)


@pytest.mark.parametrize(
    "scale",
    [
        {"replicas": "1"},
        {"replicas": True},
        {"replicas": 1.0},
        {"replicas": 1, "min_replicas": "0"},
        {"replicas": 1, "min_replicas": False},
    ],
)
def test_scaling_with_a_number_of_the_wrong_type_is_refused(operator_client, created, scale):
    status, body = call(operator_client, "post", f"{URL}/{created['id']}/scale", scale)
    assert status == 422, body
    assert set(fields(body)) <= {"replicas", "min_replicas"} and fields(body)
    assert Deployment.objects.get(pk=created["id"]).replicas == 1


@pytest.mark.parametrize(
    "extra",
    [
        {"replicas": "2"},
        {"min_replicas": True},
        {"idle_timeout": 60.0},
        {"cold_start_timeout": "600"},
        {"max_queue": "8"},
        {"parallel": True},
        {"allow_multi_gpu": "yes"},
    ],
)
def test_new_deployments_with_numbers_or_flags_of_the_wrong_type_are_refused(
    operator_client, ready, extra
):
    body = {"model_id": str(ready.pk), "served_name": "seven", **extra}
    status, answer = call(operator_client, "post", URL, body)
    assert status == 422, answer
    assert set(extra) <= set(fields(answer))
    assert not Deployment.objects.exists()


def test_a_huge_unknown_key_is_not_echoed_back(operator_client, created):
    key = "k" * 1_000_000
    response = operator_client.patch(
        f"{URL}/{created['id']}", json.dumps({key: 1}), content_type="application/json"
    )
    assert response.status_code == 422
    assert len(response.content) < 2_000
    (error,) = response.json()["errors"]
    assert error["field"].startswith("kkk") and len(error["field"]) <= 100
    assert error["message"] == "Unknown field."


# --- backends, kinds, slots -------------------------------------------------------------


def test_the_default_backend_is_llama_server_with_chat(operator_client, created):
    assert (created["backend"], created["kind"], created["pooling"]) == ("llama_server", "chat", "")
    assert created["cache_ram"] == 0 and created["parallel"] == 1
    (instance,) = created["instances"]
    assert instance["readings"] == {} and "backend" in instance


def test_an_embedding_deployment_is_created_with_its_pooling(operator_client, ready, queued):
    body = {
        "model_id": str(ready.pk), "served_name": "embed", "kind": "embedding",
        "pooling": "mean", "parallel": 4, "cache_ram": 512,
    }  # fmt: skip
    status, answer = call(operator_client, "post", URL, body)
    assert status == 201, answer
    assert (answer["kind"], answer["pooling"], answer["backend"]) == (
        "embedding",
        "mean",
        "llama_server",
    )
    assert (answer["parallel"], answer["cache_ram"]) == (4, 512)
    deployment = Deployment.objects.get(served_name="embed")
    assert (deployment.kind, deployment.pooling, deployment.parallel) == ("embedding", "mean", 4)


def test_a_reranker_is_created_on_llama_server(operator_client, ready, queued):
    body = {
        "model_id": str(ready.pk),
        "served_name": "rerank",
        "kind": "reranker",
        "pooling": "rank",
    }
    status, answer = call(operator_client, "post", URL, body)
    assert status == 201, answer
    assert (answer["kind"], answer["pooling"]) == ("reranker", "rank")


def test_a_llama_cpp_python_deployment_keeps_its_options(operator_client, ready, queued):
    body = {
        "model_id": str(ready.pk), "served_name": "py", "backend": "llama_cpp_python",
        "extra_options": {"chat_format": "chatml", "cache": True},
    }  # fmt: skip
    status, answer = call(operator_client, "post", URL, body)
    assert status == 201, answer
    assert answer["backend"] == "llama_cpp_python"
    assert answer["extra_options"] == {"chat_format": "chatml", "cache": True}


def test_kind_and_backend_can_be_changed_and_checked_together(operator_client, created):
    url = f"{URL}/{created['id']}"
    change = {"kind": "embedding", "pooling": "cls", "parallel": 8, "cache_ram": 1024}
    status, body = call(operator_client, "patch", url, change)
    assert status == 200, body
    assert (body["kind"], body["pooling"], body["parallel"], body["cache_ram"]) == (
        "embedding", "cls", 8, 1024,
    )  # fmt: skip
    status, body = call(operator_client, "patch", url, {"backend": "llama_cpp_python"})
    assert status == 422 and "parallel" in fields(body)  # 8 slots: llama-server only
    change = {"backend": "llama_cpp_python", "parallel": 1, "cache_ram": 0, "pooling": ""}
    status, body = call(operator_client, "patch", url, change)
    assert status == 200, body
    assert (body["backend"], body["parallel"]) == ("llama_cpp_python", 1)
    status, body = call(operator_client, "patch", url, {"kind": "reranker"})
    assert status == 422 and "kind" in fields(body)
    deployment = Deployment.objects.get(pk=created["id"])
    assert (deployment.backend, deployment.kind) == ("llama_cpp_python", "embedding")


@pytest.mark.parametrize("change", [{"kind": None}, {"backend": "vllm"}, {"cache_ram": "1"}])
def test_kind_backend_and_cache_changes_of_the_wrong_type_are_refused(
    operator_client, created, change
):
    (field,) = change
    status, body = call(operator_client, "patch", f"{URL}/{created['id']}", change)
    assert status == 422 and field in fields(body), body


def test_an_instance_shows_its_backend_and_readings(operator_client, created):
    instance_id = created["instances"][0]["id"]
    readings = {"slots": 4, "busy": 1, "deferred": 0, "tokens_per_second": 12.5, "kv_used": 0.1}
    Instance.objects.filter(pk=instance_id).update(backend="llama_server", readings=readings)
    status, body = call(operator_client, "get", f"/api/v1/instances/{instance_id}")
    assert status == 200 and body["backend"] == "llama_server"
    assert body["readings"] == readings
