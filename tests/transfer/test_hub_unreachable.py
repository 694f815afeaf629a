"""A hub that is down fails fast with a message that says why; a slow hub still works.

Down is a closed port (refused), a host name that does not resolve, a port that never
completes a connection (dropped packets), or a server that accepts and never answers.
huggingface_hub's own listing retried such failures for about 24 s (a refused
connection) or, with no timeout at all, for minutes (dropped packets).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import httpx
import pytest

from models_app.gguf import GGUFError, load_model_facts
from models_app.retrying import CONNECT_TIMEOUT
from models_app.transfer import (
    HfFile,
    RetryPolicy,
    TransientError,
    Unreachable,
    list_gguf_models,
    resolve_hf_file,
)
from models_app.transfer import hub as hub_module
from tests.transfer.conftest import REPO, Sleeps
from tests.transfer.fakehub import FakeHub
from tests.transfer.fakehub_http import HubHandler
from tests.transfer.unreachable import SilentServer, black_hole, closed_port

FAST = 5.0  # seconds: what "at once" means for someone waiting on the page


@pytest.fixture(autouse=True)
def _no_resolver_wait(monkeypatch):
    """``.invalid`` never resolves (RFC 2606); answer so at once, as a resolver that is up
    does, rather than depend on this machine's DNS (which may be slow or absent)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@contextmanager
def unresolvable() -> Iterator[str]:
    yield "http://gpufleet-hub.invalid"


DOWN: dict[str, tuple[Callable[[], AbstractContextManager[str]], str]] = {
    "refused": (closed_port, "connection refused"),
    "no such host": (unresolvable, "its host name could not be resolved"),
    "dropped packets": (black_hole, f"no connection within {CONNECT_TIMEOUT:g} s"),
}


def timed(call: Callable[[], object]) -> tuple[BaseException, float]:
    """The exception ``call`` raises and the seconds it took to raise it."""
    began = time.monotonic()
    with pytest.raises(Exception) as caught:
        call()
    return caught.value, time.monotonic() - began


@pytest.mark.parametrize("how", DOWN)
def test_listing_a_repo_on_a_hub_that_is_down_fails_fast_saying_why(how):
    down, reason = DOWN[how]
    with down() as endpoint:
        error, seconds = timed(lambda: list_gguf_models(REPO, endpoint=endpoint))

    assert isinstance(error, Unreachable)
    assert seconds < FAST
    assert str(error) == f"{REPO} @ main: the hub ({endpoint}) could not be reached: {reason}"


@pytest.mark.parametrize("how", DOWN)
def test_resolving_a_file_on_a_hub_that_is_down_fails_fast(how):
    down, reason = DOWN[how]
    with down() as endpoint:
        error, seconds = timed(lambda: resolve_hf_file(HfFile(REPO, "m.gguf", endpoint=endpoint)))

    assert isinstance(error, Unreachable) and isinstance(error, TransientError)
    assert seconds < FAST
    assert reason in str(error)


@pytest.mark.parametrize("how", ["refused", "dropped packets"])
def test_reading_a_header_from_a_server_that_is_down_fails_fast(how):
    down, _ = DOWN[how]
    with down() as endpoint:
        error, seconds = timed(lambda: load_model_facts(f"{endpoint}/{REPO}/resolve/main/m.gguf"))

    assert isinstance(error, GGUFError)
    assert seconds < FAST
    assert "the server could not be reached" in str(error)


def test_a_hub_that_accepts_but_never_answers_is_given_up_on_after_one_try(monkeypatch):
    monkeypatch.setattr(hub_module, "HUB_READ_TIMEOUT", 1.0)
    with SilentServer() as silent:
        error, seconds = timed(lambda: list_gguf_models(REPO, endpoint=silent.url))
        assert silent.connections == 1  # no retry loop

    assert isinstance(error, Unreachable)
    assert seconds < FAST
    assert "accepted the connection but did not answer in time" in str(error)


def test_a_header_read_from_a_server_that_never_answers_is_not_retried():
    with SilentServer() as silent:
        error, seconds = timed(
            lambda: load_model_facts(
                f"{silent.url}/m.gguf", timeout=httpx.Timeout(1.0, connect=CONNECT_TIMEOUT)
            )
        )
        assert silent.connections == 1

    assert isinstance(error, GGUFError) and seconds < FAST


def _delay_listing(monkeypatch, seconds: float) -> None:
    original = HubHandler._tree

    def slow(self, match, query):
        time.sleep(seconds)
        original(self, match, query)

    monkeypatch.setattr(HubHandler, "_tree", slow)


def _fail_listing(monkeypatch, times: int, status: int, retry_after: int | None = None) -> None:
    original = HubHandler._tree
    left = [times]

    def failing(self, match, query):
        if left[0] <= 0:
            return original(self, match, query)
        left[0] -= 1
        extra = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return self._error(status, None, "injected failure", extra)

    monkeypatch.setattr(HubHandler, "_tree", failing)


def test_a_hub_slower_to_answer_than_to_connect_still_lists(monkeypatch, hub, repo):
    _delay_listing(monkeypatch, CONNECT_TIMEOUT + 0.5)

    models = list_gguf_models(REPO, endpoint=hub.url)

    assert [m.name for m in models] == ["split/tiny.gguf", "tiny-Q8_0.gguf"]


def test_a_listing_answered_503_is_retried_with_backoff_honouring_retry_after(
    monkeypatch, hub, repo, sleeps: Sleeps
):
    _fail_listing(monkeypatch, times=2, status=503, retry_after=2)
    policy = RetryPolicy(attempts=3, base_delay=0.5, max_delay=4.0, jitter=False, sleep=sleeps)

    models = list_gguf_models(REPO, endpoint=hub.url, retry=policy)

    assert len(models) == 2
    assert sleeps == [2.0, 2.0]
    assert len(hub.requests("hub", "GET")) == 3


def test_a_listing_that_keeps_failing_gives_up_after_a_few_tries(
    monkeypatch, hub: FakeHub, repo, sleeps: Sleeps
):
    _fail_listing(monkeypatch, times=99, status=500)
    policy = RetryPolicy(attempts=3, base_delay=0.5, max_delay=4.0, jitter=False, sleep=sleeps)

    with pytest.raises(TransientError, match=r"hub error \(HTTP 500\).*gave up after 3"):
        list_gguf_models(REPO, endpoint=hub.url, retry=policy)
    assert sleeps == [0.5, 1.0]


def test_a_listing_that_is_not_json_is_reported(monkeypatch, hub, repo):
    def garbage(self, match, query):
        self._send(200, b"<html>maintenance</html>", {"Content-Type": "text/html"})

    monkeypatch.setattr(HubHandler, "_tree", garbage)

    with pytest.raises(Exception, match="the hub's answer is not a file listing"):
        list_gguf_models(REPO, endpoint=hub.url)
