"""The backend's own figures, read by the agent from one llama-server: its ``/slots``
(each slot's context size, whether it is processing, the tokens it holds) and its
Prometheus ``/metrics`` (token counters, deferred requests).

Parsing is plain functions over plain data, with no Django: ``parse`` turns the two
answers into a ``Sample`` (None for anything unexpected: it never raises on bad data),
``summary`` turns a sample and the one before it into the JSON kept in
``Instance.readings``:

    {"slots", "busy", "deferred", "tokens_per_second", "prompt_tokens_per_second",
     "kv_used", "tokens_total", "prompt_tokens_total", "at"}

Generated tokens: llama-server adds a request's tokens to ``tokens_predicted_total``
only when its slot is released, so the rate counts the counter plus the tokens each
slot decoded so far (``next_token[0].n_decoded``), which moves into the counter when
the slot is released. A counter lower than before means the server restarted: what it
counted since then is the increase, never a negative rate. The rates are None until
two readings at most ``MAX_INTERVAL`` apart exist.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

TIMEOUT = 1.0  # seconds, per request
MAX_BODY = 1024 * 1024  # bytes read from one answer at most
MAX_INTERVAL = 60.0  # seconds: older readings give no rate
MAX_READERS = 8  # instances read at once
HOST = "127.0.0.1"

TOKENS = "llamacpp:tokens_predicted_total"
PROMPT_TOKENS = "llamacpp:prompt_tokens_total"
DEFERRED = "llamacpp:requests_deferred"


@dataclass(frozen=True, slots=True)
class Slots:
    """What ``/slots`` says, summed over the slots."""

    total: int
    busy: int
    kv_tokens: int  # tokens held in the slots' KV cells (prompt and generated)
    kv_cells: int  # the slots' n_ctx, summed
    decoding: int  # tokens the slots generated that the counter does not hold yet


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one llama-server."""

    at: float  # unix time
    slots: int
    busy: int
    deferred: int
    tokens_total: int  # llamacpp:tokens_predicted_total
    prompt_tokens_total: int  # llamacpp:prompt_tokens_total
    kv_tokens: int
    kv_cells: int
    decoding: int = 0

    @property
    def kv_used(self) -> float:
        """Share of the KV cells that hold tokens, 0..1."""
        return min(self.kv_tokens / self.kv_cells, 1.0) if self.kv_cells > 0 else 0.0

    @property
    def tokens_generated(self) -> int:
        """Every generated token, those of requests still running included."""
        return self.tokens_total + self.decoding


# --- parsing ----------------------------------------------------------------------------


def _count(value: Any) -> int | None:
    """A non-negative whole number from JSON (not a flag), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return int(value)


def _decoded(slot: Mapping[str, Any]) -> int:
    steps = slot.get("next_token")
    first = steps[0] if isinstance(steps, list) and steps else None
    return (_count(first.get("n_decoded")) or 0) if isinstance(first, Mapping) else 0


def _slot(slot: Any) -> tuple[int, bool, int, int] | None:
    """(n_ctx, processing, tokens held, tokens decoded) of one slot, else None."""
    if not isinstance(slot, Mapping):
        return None
    n_ctx, processing = _count(slot.get("n_ctx")), slot.get("is_processing")
    if n_ctx is None or not isinstance(processing, bool):
        return None
    held = _count(slot.get("n_prompt_tokens", 0))
    if held is None:
        return None
    return n_ctx, processing, min(held, n_ctx), _decoded(slot)


def parse_slots(data: Any) -> Slots | None:
    """``GET /slots`` (a JSON list of slots) summed; None unless every slot makes sense."""
    if not isinstance(data, list) or not data:
        return None
    parsed = [_slot(slot) for slot in data]
    if any(p is None for p in parsed):
        return None
    rows = [p for p in parsed if p is not None]
    return Slots(
        total=len(rows),
        busy=sum(1 for _, processing, _, _ in rows if processing),
        kv_tokens=sum(held for _, _, held, _ in rows),
        kv_cells=sum(n_ctx for n_ctx, _, _, _ in rows),
        decoding=sum(decoded for _, _, _, decoded in rows),
    )


def parse_metrics(text: Any) -> dict[str, float]:
    """``name value`` of Prometheus text without labels; comments, labelled series and
    values that are not finite numbers are left out."""
    values: dict[str, float] = {}
    if not isinstance(text, str):
        return values
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or line.startswith("#") or "{" in parts[0]:
            continue
        try:
            value = float(parts[1])
        except ValueError:
            continue
        if math.isfinite(value):
            values[parts[0]] = value
    return values


def parse(slots_data: Any, metrics_text: Any, at: float) -> Sample | None:
    """One sample from the two answers; None when either lacks what a reading needs."""
    slots = parse_slots(slots_data)
    metrics = parse_metrics(metrics_text)
    tokens, prompt = _count(metrics.get(TOKENS)), _count(metrics.get(PROMPT_TOKENS))
    if slots is None or tokens is None or prompt is None:
        return None
    return Sample(
        at=at,
        slots=slots.total,
        busy=slots.busy,
        deferred=_count(metrics.get(DEFERRED, 0.0)) or 0,
        tokens_total=tokens,
        prompt_tokens_total=prompt,
        kv_tokens=slots.kv_tokens,
        kv_cells=slots.kv_cells,
        decoding=slots.decoding,
    )


# --- rates and the stored form ----------------------------------------------------------


def increase(now: int, before: int, restarted: bool) -> int:
    """How much a counter grew; after a restart, what it counted since (never < 0)."""
    return now if restarted else max(now - before, 0)


def _rate(grown: int, seconds: float) -> float:
    return round(grown / seconds, 1)


def rates(current: Sample, previous: Sample | None) -> tuple[float | None, float | None]:
    """(generated, prompt) tokens per second between two samples; None without an
    interval (no previous sample, the clock went back, or too long ago)."""
    if previous is None:
        return None, None
    seconds = current.at - previous.at
    if not 0 < seconds <= MAX_INTERVAL:
        return None, None
    restarted = (
        current.tokens_total < previous.tokens_total
        or current.prompt_tokens_total < previous.prompt_tokens_total
    )
    generated = increase(current.tokens_generated, previous.tokens_generated, restarted)
    prompt = increase(current.prompt_tokens_total, previous.prompt_tokens_total, restarted)
    return _rate(generated, seconds), _rate(prompt, seconds)


def summary(current: Sample, previous: Sample | None = None) -> dict[str, Any]:
    """What ``Instance.readings`` keeps (plain JSON)."""
    generated, prompt = rates(current, previous)
    return {
        "slots": current.slots,
        "busy": current.busy,
        "deferred": current.deferred,
        "tokens_per_second": generated,
        "prompt_tokens_per_second": prompt,
        "kv_used": round(current.kv_used, 3),
        "tokens_total": current.tokens_total,
        "prompt_tokens_total": current.prompt_tokens_total,
        "at": round(current.at, 3),
    }


def shown(readings: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """What a page shows of stored readings (to save only when it changed): slots, busy,
    deferred, whole tokens per second, KV use in whole percent."""
    if not isinstance(readings, Mapping) or not readings:
        return ()
    speed = readings.get("tokens_per_second")
    kv = readings.get("kv_used")
    return (
        readings.get("slots"),
        readings.get("busy"),
        readings.get("deferred"),
        round(speed) if isinstance(speed, int | float) else None,
        round(100 * kv) if isinstance(kv, int | float) else None,
    )


# --- reading over HTTP ------------------------------------------------------------------


def _get(client: httpx.Client, path: str) -> bytes | None:
    """The body of a 200 answer, at most ``MAX_BODY`` bytes (None otherwise)."""
    with client.stream("GET", path) as response:
        if response.status_code != 200:
            return None
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_BODY:
                return None
        return bytes(body)


def _fetch(base_url: str, timeout: float) -> tuple[bytes, bytes] | None:
    """The answers of /metrics and /slots (metrics first: a request released in between
    is then counted late, never twice)."""
    with httpx.Client(base_url=base_url, timeout=timeout, trust_env=False) as client:
        metrics = _get(client, "/metrics")
        slots = _get(client, "/slots") if metrics is not None else None
    return (metrics, slots) if metrics is not None and slots is not None else None


def read(port: int, host: str = HOST, timeout: float = TIMEOUT) -> Sample | None:
    """One sample of the llama-server on ``host:port``; None when it does not answer, or
    answers with something that is not a reading."""
    address = f"[{host}]" if ":" in host else host
    try:
        answers = _fetch(f"http://{address}:{port}", timeout)
    except (httpx.HTTPError, OSError, ValueError):
        return None
    if answers is None:
        return None
    try:
        slots = json.loads(answers[1])
        metrics = answers[0].decode("utf-8", errors="replace")
    except (ValueError, RecursionError):
        return None
    return parse(slots, metrics, time.time())


def read_many(ports: Mapping[str, int], host: str = HOST) -> dict[str, Sample | None]:
    """``read`` of several instances at once (instance id → port); a slow one costs its
    timeout, not the others'."""
    if not ports:
        return {}
    workers = min(len(ports), MAX_READERS)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="readings") as pool:
        futures = {key: pool.submit(read, port, host) for key, port in ports.items()}
        return {key: future.result() for key, future in futures.items()}
