"""Creating, scaling, stopping and deleting deployments; placement claims and reasons."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from core.units import GIB
from models_app.choices import DownloadState
from scheduling import actions, lifecycle, placement_pass, preparing
from scheduling.choices import DesiredState, InstanceState
from scheduling.models import Deployment, GpuClaim, Instance
from tests.factories import ModelFileFactory

pytestmark = pytest.mark.django_db


def create(model, capture, **fields):
    fields.setdefault("served_name", "seven-b")
    with capture(execute=True):
        return actions.do_create_deployment(model=model, **fields)


def test_a_deployment_places_its_replica_on_one_gpu_with_a_claim(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    ModelFileFactory(model=model_7b, node=fleet["a"], state=DownloadState.READY)
    deployment = create(model_7b, django_capture_on_commit_callbacks, n_ctx=8192)
    (instance,) = deployment.instances.all()
    assert instance.state == InstanceState.SCHEDULED
    assert instance.node == fleet["a"]
    (claim,) = instance.claims.all()
    assert 7 * GIB < claim.claimed < 12 * GIB
    # the 2 GiB in use are not ours: they count as well as the claim not yet in use
    assert claim.gpu.free_for_placement == 80 * GIB - 1 * GIB - claim.claimed - 2 * GIB
    assert queued == [(lifecycle.START_TASK, (str(instance.pk),), "node-a")]


def test_a_node_without_the_file_downloads_it_first_and_the_instance_waits(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = create(model_7b, django_capture_on_commit_callbacks)
    (instance,) = deployment.instances.all()
    assert instance.state == InstanceState.WAITING_FOR_FILES
    assert instance.claims.exists(), "the claim is held while the file downloads"
    assert instance.model_file.state == DownloadState.QUEUED
    assert queued[0][0] == "models_app.tasks.download_model_file"


def test_a_ready_file_moves_the_waiting_instance_to_start(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = create(model_7b, django_capture_on_commit_callbacks)
    instance = deployment.instances.get()
    copy = instance.model_file
    copy.state = DownloadState.READY
    copy.save()
    with django_capture_on_commit_callbacks(execute=True):
        assert preparing.do_check_waiting(instance.node) == 1
    instance.refresh_from_db()
    assert instance.state == InstanceState.SCHEDULED
    assert queued[-1] == (lifecycle.START_TASK, (str(instance.pk),), instance.node.name)


def test_a_failed_download_sends_the_instance_back_with_the_reason(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = create(model_7b, django_capture_on_commit_callbacks)
    instance = deployment.instances.get()
    instance.model_file.state = DownloadState.FAILED
    instance.model_file.error = "404 Not Found"
    instance.model_file.save()
    preparing.do_check_waiting(instance.node)
    instance.refresh_from_db()
    assert instance.state == InstanceState.PENDING
    assert "404 Not Found" in instance.reason
    assert not instance.claims.exists()


def test_foreign_memory_counts_against_free_memory(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    for gpu in fleet["gpus"]:
        gpu.memory_used = gpu.memory_total - 4 * GIB  # someone else's processes
        gpu.save()
    deployment = create(model_7b, django_capture_on_commit_callbacks)
    instance = deployment.instances.get()
    assert instance.state == InstanceState.PENDING
    assert "GPU 0 on node-a" in instance.reason
    assert "free" in instance.reason


def test_replicas_fill_gpus_and_the_rest_wait_with_reasons(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = create(model_7b, django_capture_on_commit_callbacks, replicas=30)
    pending = deployment.instances.filter(state=InstanceState.PENDING)
    assert 0 < pending.count() < 30
    assert all("needs" in instance.reason for instance in pending)
    for gpu in fleet["gpus"]:
        gpu.refresh_from_db()
        assert gpu.claimed + gpu.foreign_memory <= gpu.memory_total - gpu.reserved


def test_a_context_longer_than_the_model_supports_is_refused(fleet, model_7b):
    with pytest.raises(ValidationError) as error:
        actions.do_create_deployment(model=model_7b, served_name="x", n_ctx=65536)
    assert "n_ctx" in error.value.message_dict
    assert not Deployment.objects.exists()


def test_served_names_are_unique_without_regard_to_case(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    create(model_7b, django_capture_on_commit_callbacks, served_name="tiny")
    with pytest.raises(ValidationError) as error:
        actions.do_create_deployment(model=model_7b, served_name="TINY")
    assert error.value.message_dict == {"served_name": ["A deployment already serves 'tiny'."]}
    assert Deployment.objects.count() == 1


def test_the_database_refuses_a_served_name_that_differs_only_in_case(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    create(model_7b, django_capture_on_commit_callbacks, served_name="tiny")
    with pytest.raises(IntegrityError), transaction.atomic():
        Deployment.objects.create(model=model_7b, served_name="Tiny")


def test_a_deployment_may_keep_its_own_served_name_when_validated_again(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = create(model_7b, django_capture_on_commit_callbacks, served_name="tiny")
    deployment.full_clean(exclude=["only_gpus", "exclude_gpus"])


def test_options_outside_the_allowed_list_are_refused(fleet, model_7b):
    with pytest.raises(ValidationError) as error:
        actions.do_create_deployment(
            model=model_7b, served_name="x", extra_options={"model": "/etc/passwd"}
        )
    assert "not an allowed option" in error.value.message_dict["extra_options"][0]
    assert not Deployment.objects.exists()


def test_a_selector_that_matches_no_gpu_is_refused(fleet, model_7b):
    with pytest.raises(ValidationError) as error:
        actions.do_create_deployment(model=model_7b, served_name="x", exclude_gpus=fleet["gpus"])
    assert "only_gpus" in error.value.message_dict
    with pytest.raises(ValidationError) as error:
        actions.do_create_deployment(model=model_7b, served_name="x", node_labels={"zone": "eu"})
    assert "node_labels" in error.value.message_dict
    assert not Deployment.objects.exists() and not Instance.objects.exists()


def test_excluded_and_pinned_gpus_are_respected(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    gpu_b = fleet["gpus"][2]
    deployment = create(model_7b, django_capture_on_commit_callbacks, only_gpus=[gpu_b])
    claim = GpuClaim.objects.get(instance__deployment=deployment)
    assert claim.gpu == gpu_b


def test_scaling_down_stops_the_replicas_that_are_not_running_first(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = create(model_7b, django_capture_on_commit_callbacks, replicas=3)
    running = deployment.instances.first()
    Instance.objects.filter(pk=running.pk).update(state=InstanceState.RUNNING)
    with django_capture_on_commit_callbacks(execute=True):
        actions.do_scale(deployment, 1)
    live = deployment.instances.exclude(state=InstanceState.STOPPED)
    assert list(live.values_list("pk", flat=True)) == [running.pk]


def test_stopping_a_deployment_releases_claims_of_unstarted_instances(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = create(model_7b, django_capture_on_commit_callbacks, replicas=2)
    with django_capture_on_commit_callbacks(execute=True):
        actions.do_set_desired(deployment, DesiredState.STOPPED)
    assert set(deployment.instances.values_list("state", flat=True)) == {InstanceState.STOPPED}
    assert not GpuClaim.objects.exists()


def test_deleting_a_deployment_without_processes_removes_it(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = create(model_7b, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        actions.do_delete_deployment(deployment)
    assert not Deployment.objects.filter(pk=deployment.pk).exists()


def test_a_failed_instance_is_restarted_after_a_growing_backoff(
    fleet, model_7b, queued, django_capture_on_commit_callbacks, settings
):
    settings.GPUFLEET_RESTART_BACKOFF = 2.0
    settings.GPUFLEET_RESTART_BACKOFF_MAX = 5.0
    ModelFileFactory(model=model_7b, node=fleet["a"], state=DownloadState.READY)
    deployment = create(model_7b, django_capture_on_commit_callbacks)
    instance = deployment.instances.get()
    delays = []
    for _ in range(3):
        Instance.objects.filter(pk=instance.pk).update(state=InstanceState.RUNNING)
        instance.refresh_from_db()
        assert lifecycle.do_mark_failed(instance, "exit code 1", exit_code=1)
        delays.append(round((instance.next_attempt_at - instance.updated_at).total_seconds()))
        assert not instance.claims.exists()
        assert lifecycle.do_requeue_failed(now=instance.next_attempt_at) == 1
        with django_capture_on_commit_callbacks(execute=True):
            placement_pass.do_place_pending()
        instance.refresh_from_db()
        assert instance.state == InstanceState.SCHEDULED
    assert delays == [2, 4, 5]
    assert instance.restart_count == 3


def test_preview_says_where_it_would_go_without_claiming(fleet, model_7b):
    deployment = Deployment(model=model_7b, served_name="preview", n_ctx=4096)
    outcome = actions.preview(deployment, [], [])
    assert outcome["fits"] is True
    assert outcome["placement"].node_id == str(fleet["a"].pk) or outcome["placement"].node_id
    assert not GpuClaim.objects.exists()
