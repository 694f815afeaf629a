"""Reading a llama-server's own figures (``scheduling.readings``): parsing its /slots and
/metrics, rates from two readings (no database), reading them over HTTP from a small
local server, and from a real llama-server on the CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from scheduling import readings
from scheduling.llama_server import binary as llama_server_binary
from scheduling.readings import Sample, parse, parse_metrics, parse_slots, rates, shown, summary
from tests.conftest import skip_or_fail
from tests.scheduling.conftest import tiny_model_file

METRICS = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed, excluding cached tokens
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 1200
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 340
# TYPE llamacpp:predicted_tokens_seconds gauge
llamacpp:predicted_tokens_seconds 25.5
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 3
llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"} 5
"""


def slot(n: int, processing: bool, held: int | None = None, decoded: int | None = None) -> dict:
    """One slot of /slots as llama-server answers it (only_metrics)."""
    data: dict = {"id": n, "n_ctx": 1024, "speculative": False, "is_processing": processing}
    if held is not None:
        data |= {"id_task": 7, "n_prompt_tokens": held, "n_prompt_tokens_processed": held}
        data["next_token"] = [{"has_next_token": processing, "n_decoded": decoded or 0}]
    return data


SLOTS = [slot(0, True, held=512, decoded=40), slot(1, True, held=256, decoded=10), slot(2, False)]


def sample(at: float, tokens: int, prompt: int = 0, decoding: int = 0, **fields) -> Sample:
    values = dict(slots=4, busy=1, deferred=0, kv_tokens=0, kv_cells=4096) | fields
    return Sample(
        at=at, tokens_total=tokens, prompt_tokens_total=prompt, decoding=decoding, **values
    )


# --- parsing ------------------------------------------------------------------------------


def test_a_good_answer_gives_slots_busy_deferred_counters_and_kv_use():
    reading = parse(SLOTS, METRICS, at=100.0)
    assert reading is not None
    assert (reading.slots, reading.busy, reading.deferred) == (3, 2, 3)
    assert (reading.tokens_total, reading.prompt_tokens_total) == (340, 1200)
    assert (reading.kv_tokens, reading.kv_cells) == (768, 3072)
    assert reading.kv_used == pytest.approx(0.25)
    assert reading.decoding == 50 and reading.tokens_generated == 390


def test_slots_that_served_nothing_yet_hold_no_tokens():
    reading = parse_slots([slot(0, False), slot(1, False)])
    assert reading is not None
    assert (reading.total, reading.busy, reading.kv_tokens, reading.kv_cells) == (2, 0, 0, 2048)


def test_tokens_held_beyond_a_slots_context_count_as_full():
    reading = parse_slots([slot(0, True, held=5000)])
    assert reading is not None and reading.kv_tokens == 1024


@pytest.mark.parametrize(
    "answer",
    [
        None,
        {},
        [],
        "slots",
        [1, 2],
        [{"id": 0}],
        [{"id": 0, "n_ctx": 1024, "is_processing": "yes"}],
        [{"id": 0, "n_ctx": -5, "is_processing": False}],
        [{"id": 0, "n_ctx": True, "is_processing": False}],
        [{"id": 0, "n_ctx": float("nan"), "is_processing": False}],
        [{"id": 0, "n_ctx": 1024, "is_processing": False, "n_prompt_tokens": "many"}],
        [slot(0, False), "half"],
    ],
)
def test_garbage_slots_give_no_reading(answer):
    assert parse_slots(answer) is None
    assert parse(answer, METRICS, at=1.0) is None


def test_an_odd_next_token_counts_nothing_decoded_but_keeps_the_reading():
    odd = dict(slot(0, True, held=10), next_token="nope")
    reading = parse_slots([odd])
    assert reading is not None and reading.decoding == 0


@pytest.mark.parametrize(
    "text",
    [
        None,
        b"bytes",
        "",
        "<html>Not Found</html>",
        "llamacpp:tokens_predicted_total 5\n",  # no prompt counter
        "llamacpp:tokens_predicted_total NaN\nllamacpp:prompt_tokens_total 1\n",
        "llamacpp:tokens_predicted_total -3\nllamacpp:prompt_tokens_total 1\n",
        "llamacpp:tokens_predicted_total\nllamacpp:prompt_tokens_total 1\n",
    ],
)
def test_garbage_or_partial_metrics_give_no_reading(text):
    assert parse(SLOTS, text, at=1.0) is None


def test_metrics_skip_comments_labels_and_values_that_are_not_numbers():
    values = parse_metrics(METRICS + "odd value\nllamacpp:x inf\n")
    assert values["llamacpp:tokens_predicted_total"] == 340
    assert values["llamacpp:requests_deferred"] == 3
    assert "odd" not in values and "llamacpp:x" not in values
    assert not any(name.startswith("llamacpp:spec_decode") for name in values)


def test_no_deferred_gauge_counts_as_none_deferred():
    text = "llamacpp:tokens_predicted_total 5\nllamacpp:prompt_tokens_total 9\n"
    reading = parse(SLOTS, text, at=1.0)
    assert reading is not None and reading.deferred == 0


# --- rates --------------------------------------------------------------------------------


def test_the_rate_is_the_counters_growth_over_the_interval():
    generated, prompt = rates(sample(12.0, 300, 2000), sample(10.0, 100, 1000))
    assert (generated, prompt) == (100.0, 500.0)


def test_tokens_of_requests_still_running_count_before_their_slot_is_released():
    """llama-server adds a request's tokens to its counter only on release: the rate
    follows the slots' decoded tokens meanwhile, and does not count them twice after."""
    first = sample(10.0, 100, decoding=0)
    midway = sample(12.0, 100, decoding=60)  # 60 tokens decoded, counter unchanged
    released = sample(14.0, 180, decoding=0)  # 80 in all, now in the counter
    assert rates(midway, first)[0] == 30.0
    assert rates(released, midway)[0] == 10.0


def test_a_counter_reset_after_a_restart_gives_no_negative_rate():
    before = sample(10.0, 5000, 9000)
    after = sample(12.0, 40, 100)  # the server restarted: counters from 0
    generated, prompt = rates(after, before)
    assert generated == 20.0 and prompt == 50.0


def test_no_rate_without_a_usable_interval():
    now = sample(10.0, 100)
    assert rates(now, None) == (None, None)
    assert rates(now, sample(10.0, 50)) == (None, None)  # same instant
    assert rates(now, sample(11.0, 50)) == (None, None)  # the clock went back
    assert rates(now, sample(10.0 - readings.MAX_INTERVAL - 1, 50)) == (None, None)


def test_the_summary_is_the_json_kept_on_the_instance():
    current = parse(SLOTS, METRICS, at=1_700_000_002.0)
    assert current is not None
    previous = sample(1_700_000_000.0, 300, 1000)
    data = summary(current, previous)
    assert data == {
        "slots": 3,
        "busy": 2,
        "deferred": 3,
        "tokens_per_second": 45.0,  # (340 + 50 in flight - 300) / 2 s
        "prompt_tokens_per_second": 100.0,
        "kv_used": 0.25,
        "tokens_total": 340,
        "prompt_tokens_total": 1200,
        "at": 1_700_000_002.0,
    }
    assert json.loads(json.dumps(data)) == data
    assert summary(current)["tokens_per_second"] is None


def test_what_a_page_shows_ignores_counters_and_small_changes():
    data = summary(sample(12.0, 300, 2000, kv_tokens=1000), sample(10.0, 100, 1000))
    later = dict(data, tokens_total=999, at=99.0, tokens_per_second=100.2, kv_used=0.2442)
    assert shown(data) == shown(later)
    assert shown(data) != shown(dict(data, busy=2))
    assert shown(data) != shown(dict(data, tokens_per_second=90.0))
    assert shown({}) == shown(None) == ()


# --- over HTTP ----------------------------------------------------------------------------


class FakeServer(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, bytes]] = {}

    def do_GET(self) -> None:
        status, body = self.answers.get(self.path, (404, b"not found"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[int, dict[str, tuple[int, bytes]]]]:
    answers: dict[str, tuple[int, bytes]] = {}
    handler = type("Handler", (FakeServer,), {"answers": answers})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], answers
    httpd.shutdown()
    httpd.server_close()


def test_a_llama_server_is_read_over_http(server):
    port, answers = server
    answers["/slots"] = (200, json.dumps(SLOTS).encode())
    answers["/metrics"] = (200, METRICS.encode())
    reading = readings.read(port)
    assert reading is not None and (reading.slots, reading.busy, reading.deferred) == (3, 2, 3)
    assert readings.read_many({"a": port, "b": port}).keys() == {"a", "b"}


@pytest.mark.parametrize(
    ("slots", "metrics"),
    [
        ((200, b"{not json"), (200, METRICS.encode())),
        ((200, b"\xff\xfe"), (200, METRICS.encode())),
        ((200, b"[" * 100_000), (200, METRICS.encode())),
        ((501, b'{"error": "slots endpoint disabled"}'), (200, METRICS.encode())),
        ((200, json.dumps(SLOTS).encode()), (501, b"metrics disabled")),
        ((200, b"[" + b" " * (readings.MAX_BODY + 10) + b"]"), (200, METRICS.encode())),
    ],
)
def test_bad_answers_over_http_give_no_reading(server, slots, metrics):
    port, answers = server
    answers["/slots"], answers["/metrics"] = slots, metrics
    assert readings.read(port) is None


def test_nothing_listening_gives_no_reading():
    with ThreadingHTTPServer(("127.0.0.1", 0), FakeServer) as httpd:
        port = httpd.server_address[1]
    assert readings.read(port, timeout=0.2) is None


# --- a real llama-server (CPU) ------------------------------------------------------------


@pytest.fixture
def llama_server(tmp_path) -> Iterator[int]:
    """A real llama-server with 2 slots on a tiny model; its port."""
    binary = llama_server_binary()
    if binary is None:
        skip_or_fail("llama-server is not built (make install builds it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [
        str(binary), "--model", str(tiny_model_file(tmp_path)), "--host", "127.0.0.1",
        "--port", str(port), "--ctx-size", "1024", "--parallel", "2", "--no-kv-unified",
        "--n-gpu-layers", "0", "--threads", "1", "--metrics", "--slots", "--no-webui",
    ]  # fmt: skip
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=server_env())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{port}/health"
                if httpx.get(url, trust_env=False, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def server_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")} | {
        "CUDA_VISIBLE_DEVICES": ""
    }


def test_a_real_llama_server_reports_busy_slots_and_tokens_before_they_are_counted(
    llama_server,
):
    port = llama_server
    idle = readings.read(port)
    assert idle is not None and (idle.slots, idle.busy, idle.tokens_total) == (2, 0, 0)
    assert idle.kv_cells == 1024 and idle.kv_used == 0.0

    def generate() -> None:
        body = {"prompt": "hello " * 20, "n_predict": 400, "ignore_eos": True}
        url = f"http://127.0.0.1:{port}/completion"
        httpx.post(url, json=body, timeout=120, trust_env=False)

    clients = [threading.Thread(target=generate) for _ in range(2)]
    for client in clients:
        client.start()
    busy = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and busy is None:
        reading = readings.read(port)
        if reading is not None and reading.busy and reading.decoding:
            busy = reading
    for client in clients:
        client.join()
    done = readings.read(port)
    assert busy is not None and done is not None
    assert busy.tokens_total < busy.tokens_generated  # counted in flight, not yet released
    assert (done.busy, done.tokens_total, done.decoding) == (0, 800, 0)
    assert done.prompt_tokens_total > 0 and 0 < done.kv_used <= 1
    assert (summary(done, idle)["tokens_per_second"] or 0) > 0
