"""Drain: no new placements on a draining node; each instance is replaced elsewhere first
and stopped only once its replacement runs (make before break); what fits nowhere stays,
with the reason."""

from __future__ import annotations

import pytest

from inventory import actions as inventory_actions
from inventory.choices import NodeStatus
from scheduling import lifecycle, replacing
from tests.factories import GIB
from tests.scheduling.failover_helpers import (
    S,
    deploy_on_a,
    housekeeping,
    replacement_of,
    replicas_of,
    run,
)

pytestmark = pytest.mark.django_db


def stop_tasks(queued) -> list[str]:
    return [args[0] for task, args, _ in queued if task == lifecycle.STOP_TASK]


def test_a_draining_node_gets_no_new_placements(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    inventory_actions.do_set_draining(fleet["a"], True)
    housekeeping(django_capture_on_commit_callbacks)
    new = replacement_of(deployment.instances.get(node=fleet["a"]))
    assert new is not None and new.node == fleet["b"]


def test_a_drained_instance_stops_only_once_its_replacement_runs(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    (old,) = deployment.instances.all()
    inventory_actions.do_set_draining(fleet["a"], True)
    housekeeping(django_capture_on_commit_callbacks)
    housekeeping(django_capture_on_commit_callbacks)
    new = replacement_of(old)
    old.refresh_from_db()
    assert new.state == S.SCHEDULED and old.state == S.RUNNING
    assert str(old.pk) not in stop_tasks(queued)
    assert len(replicas_of(deployment)) == 1  # the pair counts as one replica
    run(new)
    housekeeping(django_capture_on_commit_callbacks)
    old.refresh_from_db()
    assert old.state == S.STOPPING and f"Replaced by {new.short_id}" in old.reason
    assert stop_tasks(queued) == [str(old.pk)]
    assert [i.pk for i in replicas_of(deployment)] == [new.pk]


def test_an_instance_that_fits_nowhere_else_stays_with_the_reason(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    fleet["gpus"][2].memory_used = 23 * GIB  # node-b's only GPU is full
    fleet["gpus"][2].save()
    inventory_actions.do_set_draining(fleet["a"], True)
    housekeeping(django_capture_on_commit_callbacks)
    (old,) = deployment.instances.filter(node=fleet["a"])
    assert old.state == S.RUNNING
    (row,) = replacing.drain_report(fleet["a"])
    assert row["instance_id"] == str(old.pk) and row["status"] == "stuck"
    assert "No room" in row["reason"]


def test_undraining_cancels_a_replacement_that_is_not_running_yet(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    (old,) = deployment.instances.all()
    inventory_actions.do_set_draining(fleet["a"], True)
    housekeeping(django_capture_on_commit_callbacks)
    new = replacement_of(old)
    inventory_actions.do_set_draining(fleet["a"], False)
    housekeeping(django_capture_on_commit_callbacks)
    new.refresh_from_db()
    old.refresh_from_db()
    assert new.state == S.STOPPED and old.state == S.RUNNING
    assert [i.pk for i in replicas_of(deployment)] == [old.pk]


def test_a_placed_instance_not_yet_started_moves_at_once(
    fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    (instance,) = deployment.instances.all()
    lifecycle.move(instance, (S.RUNNING,), S.SCHEDULED)
    fleet["a"].status = NodeStatus.DRAINING
    fleet["a"].save()
    housekeeping(django_capture_on_commit_callbacks)
    instance.refresh_from_db()
    assert instance.node == fleet["b"] and instance.state == S.SCHEDULED
    assert replacement_of(instance) is None


def test_the_node_page_lists_what_cannot_move_with_the_reason(
    fleet, model_7b, queued, django_capture_on_commit_callbacks, viewer_client
):
    deployment = deploy_on_a(fleet, model_7b, django_capture_on_commit_callbacks)
    fleet["gpus"][2].memory_used = 23 * GIB
    fleet["gpus"][2].save()
    inventory_actions.do_set_draining(fleet["a"], True)
    housekeeping(django_capture_on_commit_callbacks)
    (old,) = deployment.instances.filter(node=fleet["a"])
    page = viewer_client.get(f"/nodes/{fleet['a'].pk}/").content.decode()
    assert f"#{old.short_id}" in page and "No room for it" in page
    body = viewer_client.get(f"/api/v1/nodes/{fleet['a'].pk}").json()
    (row,) = body["drain"]
    assert row["status"] == "stuck" and "No room" in row["reason"]
