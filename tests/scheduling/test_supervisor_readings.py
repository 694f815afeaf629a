"""The agent's readings pass: each running llama-server of its node is read, its
``Instance.readings`` saved when what a page shows changed, and ``instance.readings``
sent (never ``instance.changed``, on which the gateway reloads its routes)."""

from __future__ import annotations

import pytest

from scheduling import actions, supervisor
from scheduling.choices import InstanceState
from scheduling.models import Instance
from scheduling.readings import Sample

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(fleet, model_7b, queued, django_capture_on_commit_callbacks):
    """Two running instances on node-a: a llama-server on port 9001 and a
    llama-cpp-python server on port 9002."""
    with django_capture_on_commit_callbacks(execute=True):
        server = actions.do_create_deployment(model=model_7b, served_name="srv", parallel=4)
        python = actions.do_create_deployment(
            model=model_7b, served_name="py", backend="llama_cpp_python"
        )
    for deployment, backend, port in (
        (server, "llama_server", 9001),
        (python, "llama_cpp_python", 9002),
    ):
        Instance.objects.filter(deployment=deployment).update(
            state=InstanceState.RUNNING, backend=backend, port=port, node=fleet["a"]
        )
    return Instance.objects.get(deployment=server), Instance.objects.get(deployment=python)


class Answers(dict):
    """What ``readings.read`` answers per port (a missing port: no answer); ``asked``:
    the ports it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int] = []


@pytest.fixture
def answers(monkeypatch) -> Answers:
    table = Answers()

    def read(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> Sample | None:
        table.asked.append(port)
        return table.get(port)

    monkeypatch.setattr("scheduling.readings.read", read)
    return table


@pytest.fixture
def sent_events(monkeypatch) -> list[dict]:
    """Events sent after commit, one by one or in a batch (recorded, not delivered)."""
    from core import events

    sent: list[dict] = []
    monkeypatch.setattr(events, "deliver", sent.append)
    monkeypatch.setattr(events, "deliver_many", sent.extend)
    return sent


def sample(at: float, tokens: int, busy: int = 1, kv_tokens: int = 1024) -> Sample:
    return Sample(
        at=at, slots=4, busy=busy, deferred=0, tokens_total=tokens, prompt_tokens_total=0,
        kv_tokens=kv_tokens, kv_cells=4096,
    )  # fmt: skip


def take(node, previous, capture) -> dict:
    with capture(execute=True):
        return supervisor.take_readings(node, previous)


def passes(fleet, answers: Answers, capture, *later: Sample | None) -> dict:
    """node-a's first pass, in which the llama-server on port 9001 answers 500 tokens at
    100 s, then one pass for each of ``later`` (what it answers then); the samples kept."""
    kept: dict = {}
    for answer in (sample(100.0, 500), *later):
        answers[9001] = answer
        kept = take(fleet["a"], kept, capture)
    return kept


def kinds(events: list[dict]) -> list[str]:
    return [event["kind"] for event in events]


def test_running_llama_servers_are_read_and_their_readings_saved_and_sent(
    fleet, running, answers, sent_events, django_capture_on_commit_callbacks
):
    server, python = running
    kept = passes(fleet, answers, django_capture_on_commit_callbacks)
    assert answers.asked == [9001]  # llama-cpp-python has no /slots to read
    server.refresh_from_db()
    assert server.readings["slots"] == 4 and server.readings["busy"] == 1
    assert server.readings["kv_used"] == 0.25 and server.readings["tokens_per_second"] is None
    assert kept == {str(server.pk): answers[9001]}
    (event,) = sent_events
    assert event["kind"] == "instance.readings"
    assert event["instance_id"] == str(server.pk)
    assert event["deployment_id"] == str(server.deployment_id)
    python.refresh_from_db()
    assert python.readings == {}


def test_the_next_pass_gives_tokens_per_second_over_the_interval(
    fleet, running, answers, sent_events, django_capture_on_commit_callbacks
):
    server, _ = running
    passes(fleet, answers, django_capture_on_commit_callbacks, sample(102.0, 560))
    server.refresh_from_db()
    assert server.readings["tokens_per_second"] == 30.0
    assert kinds(sent_events) == ["instance.readings", "instance.readings"]


def test_nothing_is_saved_or_sent_when_what_a_page_shows_is_the_same(
    fleet, running, answers, sent_events, django_capture_on_commit_callbacks
):
    server, _ = running
    passes(
        fleet,
        answers,
        django_capture_on_commit_callbacks,
        sample(102.0, 500, kv_tokens=1025),  # a token more: still 25 %
        sample(104.0, 500, kv_tokens=1026),
    )
    server.refresh_from_db()
    # the second pass stored tokens_per_second 0.0 instead of None (shown as a change)
    assert server.readings["at"] == 102.0
    assert kinds(sent_events) == ["instance.readings", "instance.readings"]


def test_an_instance_that_does_not_answer_keeps_its_readings_and_last_sample(
    fleet, running, answers, sent_events, django_capture_on_commit_callbacks
):
    server, _ = running
    kept = passes(fleet, answers, django_capture_on_commit_callbacks)
    answers[9001] = None
    kept_after = take(fleet["a"], kept, django_capture_on_commit_callbacks)
    assert kept_after == kept
    server.refresh_from_db()
    assert server.readings["busy"] == 1
    assert kinds(sent_events) == ["instance.readings"]


def test_a_restarted_backend_gives_no_negative_rate(
    fleet, running, answers, django_capture_on_commit_callbacks
):
    server, _ = running
    before = {str(server.pk): sample(100.0, 50_000)}
    answers[9001] = sample(102.0, 20)
    take(fleet["a"], before, django_capture_on_commit_callbacks)
    server.refresh_from_db()
    assert server.readings["tokens_per_second"] == 10.0


def test_instances_that_do_not_run_or_run_elsewhere_are_not_read(
    fleet, running, answers, sent_events, django_capture_on_commit_callbacks
):
    server, _ = running
    answers[9001] = sample(100.0, 500)
    Instance.objects.filter(pk=server.pk).update(state=InstanceState.STOPPING)
    take(fleet["a"], {}, django_capture_on_commit_callbacks)
    Instance.objects.filter(pk=server.pk).update(state=InstanceState.RUNNING)
    take(fleet["b"], {}, django_capture_on_commit_callbacks)
    assert answers.asked == [] and sent_events == []


def test_the_agent_reads_every_two_seconds(fleet, monkeypatch):
    calls: list[float] = []
    for name in ("adopt", "check_processes", "refresh_measurements", "stop_strays"):
        monkeypatch.setattr(supervisor, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(supervisor.preparing, "do_check_waiting", lambda node: None)
    monkeypatch.setattr(supervisor.oom, "check_node", lambda node: None)
    monkeypatch.setattr(
        supervisor, "take_readings", lambda node, previous: calls.append(1.0) or previous
    )
    watcher = supervisor.Supervisor(fleet["a"])
    for now in (0.0, 1.0, 2.0, 3.0, 4.5):
        watcher.tick(fleet["a"], now=now, housekeeper=False)
    assert len(calls) == 3 and supervisor.READINGS_EVERY == 2.0
