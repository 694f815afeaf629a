"""Failover: a node offline for longer than GPUFLEET_FAILOVER_AFTER has its instances
replaced on other nodes; the lost ones keep their claims; when it comes back, exactly
the wanted replicas remain (a running replacement stays, the returning one stops)."""

from __future__ import annotations

import threading
from contextlib import nullcontext

import pytest
from django.conf import settings
from django.db import connections

from inventory import actions as inventory_actions
from inventory.choices import NodeStatus
from inventory.models import Node
from models_app.models import ModelFile
from scheduling import actions, lifecycle, replacing
from scheduling.models import Instance
from tests.scheduling.failover_helpers import (
    S,
    deploy_on_a,
    housekeeping,
    lose,
    replacement_of,
    replicas_of,
    run,
)

pytestmark = pytest.mark.django_db
AFTER = settings.GPUFLEET_FAILOVER_AFTER


def test_a_node_offline_longer_than_the_failover_delay_gets_its_instance_replaced(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    (lost,) = deployment.instances.all()
    lose(fleet["a"], AFTER + 5)
    housekeeping(django_capture_on_commit_callbacks)
    lost.refresh_from_db()
    assert lost.state == S.UNREACHABLE
    assert lost.claims.exists(), "the lost instance keeps its claims on the lost node"
    new = replacement_of(lost)
    assert new is not None and new.node == fleet["b"] and new.state == S.SCHEDULED
    assert new.claims.exists()
    assert (lifecycle.START_TASK, (str(new.pk),), "node-b") in queued
    assert replicas_of(deployment) == [new]


def test_a_node_offline_for_less_than_the_failover_delay_is_waited_for(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    lose(fleet["a"], AFTER - 10)
    housekeeping(django_capture_on_commit_callbacks)
    (only,) = deployment.instances.all()
    assert only.state == S.UNREACHABLE
    assert replacement_of(only) is None


def test_a_replacement_on_a_node_without_the_file_downloads_it_first(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    ModelFile.objects.filter(node=fleet["b"]).delete()
    lose(fleet["a"], AFTER + 5)
    housekeeping(django_capture_on_commit_callbacks)
    new = replacement_of(deployment.instances.get(node=fleet["a"]))
    assert new is not None and new.state == S.WAITING_FOR_FILES and new.node == fleet["b"]
    assert any(task == "models_app.tasks.download_model_file" for task, _, _ in queued)


def test_running_the_pass_twice_makes_no_more_replacements_than_replicas_missing(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks, replicas=2)
    lose(fleet["a"], AFTER + 5)
    housekeeping(django_capture_on_commit_callbacks)
    housekeeping(django_capture_on_commit_callbacks)
    assert replacing.do_failover() == []
    assert Instance.objects.filter(replaces__isnull=False).count() == 2
    assert len(replicas_of(deployment)) == 2


def test_a_deployment_with_more_replicas_than_wanted_gets_no_replacement(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks, replicas=2)
    # Another replica elsewhere already makes up the wanted count of one.
    Instance.objects.filter(pk=deployment.instances.first().pk).update(node=fleet["b"])
    deployment.replicas = deployment.min_replicas = 1
    deployment.save()
    lose(fleet["a"], AFTER + 5)
    assert replacing.do_failover() == []


def test_when_the_node_returns_after_the_replacement_runs_the_returning_one_stops(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    (lost,) = deployment.instances.all()
    lose(fleet["a"], AFTER + 5)
    housekeeping(django_capture_on_commit_callbacks)
    new = run(replacement_of(lost))
    housekeeping(django_capture_on_commit_callbacks)
    lost.refresh_from_db()
    assert lost.state == S.STOPPING and "Replaced by" in lost.reason
    assert lost.claims.exists(), "held until its node's worker has stopped it"
    assert (lifecycle.STOP_TASK, (str(lost.pk),), "node-a") in queued
    inventory_actions.do_heartbeat(fleet["a"])  # the node is back
    housekeeping(django_capture_on_commit_callbacks)
    assert [i.pk for i in replicas_of(deployment)] == [new.pk]


def test_when_the_node_returns_before_the_replacement_runs_the_replacement_stops(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    (lost,) = deployment.instances.all()
    lose(fleet["a"], AFTER + 5)
    housekeeping(django_capture_on_commit_callbacks)
    new = replacement_of(lost)
    inventory_actions.do_heartbeat(fleet["a"])
    lost.refresh_from_db()
    assert lifecycle.do_mark_running(lost, {})  # its agent adopted the backend
    housekeeping(django_capture_on_commit_callbacks)
    new.refresh_from_db()
    assert new.state == S.STOPPED and "Not needed" in new.reason
    assert [i.pk for i in replicas_of(deployment)] == [lost.pk]
    lost.refresh_from_db()
    assert lost.state == S.RUNNING


def test_stopping_a_deployment_during_failover_stops_both(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    from scheduling import actions
    from scheduling.choices import DesiredState

    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    lose(fleet["a"], AFTER + 5)
    housekeeping(django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        actions.do_set_desired(deployment, DesiredState.STOPPED)
    states = set(deployment.instances.values_list("state", flat=True))
    assert states <= {S.STOPPING, S.STOPPED}


def test_removing_a_node_moves_its_deployments(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        actions.do_remove_node(fleet["a"])
    (moved,) = deployment.instances.all()
    assert moved.node == fleet["b"] and moved.state == S.SCHEDULED


def test_removing_an_offline_node_through_the_api_moves_its_deployments(
    fleet, model_7b, queued, django_capture_on_commit_callbacks, operator_client
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    lose(fleet["a"], AFTER - 10)
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.delete(f"/api/v1/nodes/{fleet['a'].pk}")
    assert response.status_code == 204
    (moved,) = deployment.instances.all()
    assert moved.node == fleet["b"] and moved.state == S.SCHEDULED


def test_a_node_that_reported_again_since_the_check_is_not_removed(
    fleet, model_7b, queued, django_capture_on_commit_callbacks, operator_client, monkeypatch
):
    """The API looked while the node was offline; its agent reported before the removal
    locked the row: refused, and nothing of the node or its work is lost."""
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    lose(fleet["a"], AFTER - 10)
    seen_offline = Node.objects.get(pk=fleet["a"].pk)
    inventory_actions.do_heartbeat(fleet["a"])  # the agent is back
    monkeypatch.setattr("inventory.api.get_node", lambda node_id: seen_offline)
    response = operator_client.delete(f"/api/v1/nodes/{fleet['a'].pk}")
    assert response.status_code == 409
    assert "only an offline node" in response.json()["detail"]
    assert Node.objects.get(pk=fleet["a"].pk).status == NodeStatus.ONLINE
    (kept,) = deployment.instances.all()
    assert kept.node_id == fleet["a"].pk


def test_removing_a_node_someone_removed_meanwhile_does_nothing(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    stale = Node.objects.get(pk=fleet["a"].pk)
    with django_capture_on_commit_callbacks(execute=True):
        actions.do_remove_node(fleet["a"])
        assert actions.do_remove_node(stale, only_offline=True) == []
    assert not Node.objects.filter(pk=stale.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_two_passes_at_once_make_one_replacement(fleet, model_7b, queued):
    """Concurrent housekeepers (a lease handover): the deployment's row lock (PostgreSQL)
    or the single writer (SQLite) and the unique constraint arbitrate."""
    # Outside a test transaction, on-commit callbacks run at once: nothing to capture.
    deployment = deploy_on_a(fleet, model_7b, lambda **_: nullcontext(), replicas=3)
    lose(fleet["a"], AFTER + 5)
    lifecycle.do_mark_unreachable(fleet["a"].pk)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def failover() -> None:
        try:
            barrier.wait(timeout=30)
            replacing.do_failover()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=failover) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert Instance.objects.filter(replaces__isnull=False).count() == 3
    assert len(replicas_of(deployment)) == 3


def test_deleting_a_node_in_the_admin_moves_its_deployments(
    fleet, model_7b, queued, django_capture_on_commit_callbacks, admin_client
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    url = f"/admin/inventory/node/{fleet['a'].pk}/delete/"
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    (moved,) = deployment.instances.all()
    assert moved.node == fleet["b"] and moved.state == S.SCHEDULED
