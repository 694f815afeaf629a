"""Processes ride out a restart of Redis or the database: live events that cannot reach
Redis are kept and sent later, tasks the broker lost are sent again, the agent never
exits on a failing tick."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError

from agent import loop as agent
from core import events
from core.models import LiveEvent
from models_app import actions as downloads
from models_app.choices import DownloadState
from models_app.models import ModelFile
from scheduling import lifecycle
from scheduling.models import Deployment, Instance
from tests.factories import CatalogModelFactory, ModelFileFactory, NodeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_down(monkeypatch, settings) -> list[dict]:
    """A cluster whose Redis refuses connections; what reaches it once it is back."""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    state = {"up": False}
    sent: list[dict] = []

    def group_send(event):
        if not state["up"]:
            raise RedisConnectionError("Connection refused")
        sent.append(event)

    monkeypatch.setattr(events, "_group_send", group_send)
    monkeypatch.setattr(events, "_redis_state", state, raising=False)  # tests turn it up
    return sent


def test_an_event_that_cannot_reach_redis_is_kept_and_sent_once_it_is_back(redis_down):
    events.deliver(events.make_event("deployment.changed", deployment_id="d1"))
    events.deliver(events.make_event("instance.changed", instance_id="i1"))
    assert LiveEvent.objects.count() == 2
    assert events.resend_kept() == 0  # still down: nothing sent, nothing forgotten
    assert LiveEvent.objects.count() == 2

    events._redis_state["up"] = True
    assert events.resend_kept() == 2
    assert [e["kind"] for e in redis_down] == ["deployment.changed", "instance.changed"]
    assert not LiveEvent.objects.exists()
    assert events.resend_kept() == 0  # each kept event goes out once


def test_periodic_readings_are_not_kept_while_redis_is_down(redis_down):
    events.deliver(events.make_event("node.gpus", node_id="n1"))
    events.deliver(events.make_event("instance.readings", instance_id="i1"))
    assert not LiveEvent.objects.exists()


def test_a_failed_delivery_never_reaches_the_committed_caller(
    redis_down, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(LiveEvent.objects, "create", _raise)  # the database is down too
    with django_capture_on_commit_callbacks(execute=True):
        events.send("deployment.changed", deployment_id="d1")  # logged, not raised


def test_without_redis_resend_kept_leaves_the_outbox_to_the_web_relay(settings):
    settings.REDIS_URL = ""
    LiveEvent.objects.create(payload=events.make_event("deployment.changed"))
    assert events.resend_kept() == 0
    assert LiveEvent.objects.count() == 1


def _raise(*args, **kwargs):
    raise RuntimeError("database unreachable")


def _scheduled(node, age: float, task_id: str) -> Instance:
    deployment = Deployment.objects.create(
        model=CatalogModelFactory(), served_name=f"d{Deployment.objects.count()}"
    )
    instance = Instance.objects.create(
        deployment=deployment, state="scheduled", node=node, task_id=task_id
    )
    past = timezone.now() - timedelta(seconds=age)
    Instance.objects.filter(pk=instance.pk).update(updated_at=past)
    return instance


def test_start_tasks_that_could_not_be_queued_are_sent_again(
    queued, django_capture_on_commit_callbacks
):
    node = NodeFactory(name="gpu-a")
    unsent = _scheduled(node, age=10, task_id="")
    _scheduled(node, age=1, task_id="")  # its task may be on its way
    _scheduled(node, age=30, task_id="task-9")  # queued, waiting for a worker
    lost = _scheduled(node, age=600, task_id="task-7")  # the broker lost it
    with django_capture_on_commit_callbacks(execute=True):
        assert lifecycle.do_resend_lost_starts(node) == 2
    assert sorted(args for _, args, _ in queued) == sorted([(str(unsent.pk),), (str(lost.pk),)])
    assert {cluster for _, _, cluster in queued} == {"gpu-a"}
    with django_capture_on_commit_callbacks(execute=True):
        assert lifecycle.do_resend_lost_starts(node) == 0  # touched: not again at once


def test_a_start_task_the_broker_refuses_leaves_the_instance_to_be_resent(
    monkeypatch, django_capture_on_commit_callbacks
):
    def refuse(*args, **kwargs):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr("django_q.tasks.async_task", refuse)
    instance = _scheduled(NodeFactory(), age=0, task_id="old-task")
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.enqueue(instance, lifecycle.START_TASK)  # logged, not raised
    instance.refresh_from_db()
    assert instance.task_id == ""


def test_a_download_whose_task_could_not_be_queued_is_sent_again(
    queued, django_capture_on_commit_callbacks
):
    node = NodeFactory()
    unsent = ModelFileFactory(node=node, state=DownloadState.QUEUED, task_id="")
    waiting = ModelFileFactory(node=node, state=DownloadState.QUEUED, task_id="task-3")
    past = timezone.now() - timedelta(minutes=2)
    ModelFile.objects.filter(pk__in=[unsent.pk, waiting.pk]).update(updated_at=past)
    with django_capture_on_commit_callbacks(execute=True):
        resumed = downloads.do_resume_stalled(node)
    assert [copy.pk for copy in resumed] == [unsent.pk]
    assert [args for _, args, _ in queued] == [(str(unsent.pk),)]


def test_the_agent_keeps_running_when_a_tick_fails(monkeypatch, settings):
    settings.GPUFLEET_SAMPLE_INTERVAL = 0.01
    monkeypatch.setattr(agent, "RETRY_MAX", 0.01)
    monkeypatch.setattr(agent, "close_old_connections", lambda: None)  # the test's own
    node_agent = agent.Agent.__new__(agent.Agent)
    node_agent.stop = threading.Event()
    node_agent.holder = "test"
    node_agent.probe = type("Probe", (), {"close": lambda self: None})()
    ticks = []

    def tick():
        ticks.append(1)
        if len(ticks) >= 4:
            node_agent.stop.set()
        raise RedisConnectionError("Connection refused")

    node_agent.tick = tick
    node_agent.run()  # returns once stopped: three failures did not end it
    assert len(ticks) == 4
