"""On-demand deployments: demand raised by traffic starts exactly what is missing, idle
instances above the minimum are released, scaling keeps an always-on deployment always
on, the gateway's waiting count, and the phases a start records."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from models_app.choices import DownloadState
from scheduling import actions, lifecycle
from scheduling.choices import InstanceState
from scheduling.models import Deployment, Instance, InstanceRun
from tests.factories import ModelFileFactory

S = InstanceState
pytestmark = pytest.mark.django_db


@pytest.fixture
def on_demand(fleet, model_7b, queued, django_capture_on_commit_callbacks):
    ModelFileFactory(model=model_7b, node=fleet["a"], state=DownloadState.READY)
    with django_capture_on_commit_callbacks(execute=True):
        return actions.do_create_deployment(
            model=model_7b, served_name="cold", n_ctx=4096, replicas=3, min_replicas=0,
            idle_timeout=60,
        )  # fmt: skip


def test_a_scale_to_zero_deployment_starts_with_no_instance(on_demand):
    assert not on_demand.instances.exists() and on_demand.wanted_replicas == 0


def test_demand_creates_what_is_missing_once(on_demand, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert actions.do_demand(on_demand.pk, 1) is True
        assert actions.do_demand(on_demand.pk, 1) is False, "asked twice: still one"
    (instance,) = on_demand.instances.all()
    assert instance.state == S.SCHEDULED and instance.pending_since and instance.placed_at
    with django_capture_on_commit_callbacks(execute=True):
        actions.do_demand(on_demand.pk, 10)
    assert on_demand.instances.count() == 3, "never more than replicas"


def test_a_stopped_deployment_ignores_demand(on_demand):
    actions.do_set_desired(on_demand, "stopped")
    assert actions.do_demand(on_demand.pk, 1) is False
    assert not on_demand.instances.exists()


def test_idle_instances_above_the_minimum_are_released(
    on_demand, queued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        actions.do_demand(on_demand.pk, 2)
    first, second = on_demand.instances.order_by("created_at")
    long_ago = timezone.now() - timedelta(seconds=120)
    Instance.objects.filter(pk=first.pk).update(state=S.RUNNING, last_request_at=long_ago)
    Instance.objects.filter(pk=second.pk).update(state=S.RUNNING, last_request_at=timezone.now())
    released = actions.do_release_idle()
    assert [i.pk for i in released] == [first.pk]
    first.refresh_from_db()
    assert first.state == S.STOPPING and "without requests" in first.reason
    on_demand.refresh_from_db()
    assert on_demand.demand == 1


def test_the_minimum_is_never_released(on_demand, queued, django_capture_on_commit_callbacks):
    Deployment.objects.filter(pk=on_demand.pk).update(min_replicas=1)
    on_demand.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        actions.do_demand(on_demand.pk, 1)
    long_ago = timezone.now() - timedelta(hours=1)
    on_demand.instances.update(state=S.RUNNING, last_request_at=long_ago)
    assert actions.do_release_idle() == []


def test_scaling_an_always_on_deployment_keeps_it_always_on(fleet, model_7b, queued):
    ModelFileFactory(model=model_7b, node=fleet["a"], state=DownloadState.READY)
    always = actions.do_create_deployment(model=model_7b, served_name="on", replicas=1)
    assert always.min_replicas == 1
    actions.do_scale(always, 2)
    assert (always.min_replicas, always.wanted_replicas) == (2, 2)
    with pytest.raises(ValidationError, match="min_replicas"):
        actions.do_scale(always, 1, min_replicas=2)


def test_the_waiting_count_is_noted_with_its_start(on_demand, sent_events):
    actions.do_note_waiting({str(on_demand.pk): 3})
    on_demand.refresh_from_db()
    since = on_demand.waiting_since
    assert on_demand.waiting == 3 and since is not None
    actions.do_note_waiting({str(on_demand.pk): 5})
    on_demand.refresh_from_db()
    assert on_demand.waiting == 5 and on_demand.waiting_since == since
    actions.do_note_waiting({str(on_demand.pk): 0})
    on_demand.refresh_from_db()
    assert on_demand.waiting == 0 and on_demand.waiting_since is None


def test_a_start_records_its_phases(on_demand, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        actions.do_demand(on_demand.pk, 1)
    instance = on_demand.instances.get()
    claimed = lifecycle.do_claim_start(str(instance.pk), "worker-1")
    assert claimed is not None
    instance, run = claimed
    assert lifecycle.do_record_launch(instance, 101, 102)
    assert lifecycle.do_mark_running(instance, {"CPU": 1})
    run = InstanceRun.objects.get(pk=run.pk)
    assert set(run.phases) == {"placement", "queue", "spawn", "load"}
    assert all(seconds >= 0 for seconds in run.phases.values())
    assert run.phase_total == pytest.approx(sum(run.phases.values()), abs=0.01)
