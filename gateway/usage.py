"""Usage and activity, counted in memory on the request path and written in batches.

``record`` adds one finished request to this minute's counts per (key, served name);
``Usage.flush`` (every ``FLUSH`` seconds, in a thread) adds them to ``UsageMinute``
rows, bumps ``Instance.last_request_at`` for instances that served or are serving
requests (what idle release and eviction read), and the keys' ``last_used_at``. The
request never waits for a database write. Prometheus series live in ``REGISTRY``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, Histogram

logger = logging.getLogger("gpufleet.gateway")
FLUSH = 2.0

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter(
    "gpufleet_gateway_requests", "Requests through the gateway.",
    ["served_name", "status"], registry=REGISTRY,
)  # fmt: skip
TOKENS = Counter(
    "gpufleet_gateway_tokens", "Tokens served through the gateway.",
    ["served_name", "kind"], registry=REGISTRY,
)  # fmt: skip
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT = Histogram(
    "gpufleet_gateway_time_to_first_token_seconds", "Time to the first byte of the answer.",
    ["served_name"], buckets=_SECONDS, registry=REGISTRY,
)  # fmt: skip
QUEUE_WAIT = Histogram(
    "gpufleet_gateway_queue_wait_seconds", "Time a request waited for a running instance.",
    ["served_name"], buckets=_SECONDS, registry=REGISTRY,
)  # fmt: skip
COLD_STARTS = Histogram(
    "gpufleet_gateway_cold_start_seconds", "First request to a ready instance, from zero.",
    ["served_name"], buckets=_SECONDS, registry=REGISTRY,
)  # fmt: skip


@dataclass
class Counts:
    deployment_id: str
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms_sum: float = 0.0
    ttft_count: int = 0
    queue_ms_sum: float = 0.0
    cold_starts: int = 0


@dataclass
class Outcome:
    """One finished request, as the request path saw it."""

    key_id: str
    deployment_id: str
    served_name: str
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft: float | None = None  # seconds
    queue_wait: float = 0.0
    cold_start: float | None = None  # seconds, when this request waited for a cold start


@dataclass
class Usage:
    counts: dict[tuple[int, str, str], Counts] = field(default_factory=dict)
    instances: dict[str, float] = field(default_factory=dict)  # instance id → last use (epoch)
    keys: set[str] = field(default_factory=set)

    def record(self, outcome: Outcome, now: float | None = None) -> None:
        minute = int((now or time.time()) // 60) * 60
        key = (minute, outcome.key_id, outcome.served_name)
        counts = self.counts.get(key) or self.counts.setdefault(key, Counts(outcome.deployment_id))
        counts.requests += 1
        counts.errors += outcome.status >= 400
        counts.prompt_tokens += outcome.prompt_tokens
        counts.completion_tokens += outcome.completion_tokens
        counts.queue_ms_sum += outcome.queue_wait * 1000
        if outcome.ttft is not None:
            counts.ttft_ms_sum += outcome.ttft * 1000
            counts.ttft_count += 1
        counts.cold_starts += outcome.cold_start is not None
        self.keys.add(outcome.key_id)
        _observe(outcome)

    def used(self, instance_id: str) -> None:
        """A request to this instance began or ended now."""
        self.instances[instance_id] = time.time()

    def take(self) -> Usage:
        """What was counted so far; this object starts afresh."""
        taken = Usage(self.counts, self.instances, self.keys)
        self.counts, self.instances, self.keys = {}, {}, set()
        return taken


def _observe(outcome: Outcome) -> None:
    name = outcome.served_name
    REQUESTS.labels(name, str(outcome.status)).inc()
    if outcome.prompt_tokens:
        TOKENS.labels(name, "prompt").inc(outcome.prompt_tokens)
    if outcome.completion_tokens:
        TOKENS.labels(name, "completion").inc(outcome.completion_tokens)
    if outcome.ttft is not None:
        TTFT.labels(name).observe(outcome.ttft)
    QUEUE_WAIT.labels(name).observe(outcome.queue_wait)
    if outcome.cold_start is not None:
        COLD_STARTS.labels(name).observe(outcome.cold_start)


def flush(batch: Usage, busy: list[str], waiting: dict[str, int] | None = None) -> None:
    """Write one batch (in a thread): usage rows, instances' and keys' last use, and the
    requests held for cold starts per deployment."""
    from gateway.models import InferenceKey
    from scheduling.actions import do_note_waiting
    from scheduling.models import Instance

    if waiting:
        do_note_waiting(waiting)

    now = timezone.now()
    for (minute, key_id, served_name), counts in batch.counts.items():
        _add_minute(datetime.fromtimestamp(minute, tz=UTC), key_id, served_name, counts)
    last_use = {i: datetime.fromtimestamp(t, tz=UTC) for i, t in batch.instances.items()}
    last_use |= dict.fromkeys(busy, now)  # a request in flight: in use now
    for instance_id, when in last_use.items():
        Instance.objects.filter(pk=instance_id).update(last_request_at=when)
    if batch.keys:
        InferenceKey.objects.filter(pk__in=batch.keys).update(last_used_at=now)


def _add_minute(minute: datetime, key_id: str, served_name: str, counts: Counts) -> None:
    from gateway.models import UsageMinute
    from scheduling.models import Deployment

    increments = {
        "requests": F("requests") + counts.requests,
        "errors": F("errors") + counts.errors,
        "prompt_tokens": F("prompt_tokens") + counts.prompt_tokens,
        "completion_tokens": F("completion_tokens") + counts.completion_tokens,
        "ttft_ms_sum": F("ttft_ms_sum") + counts.ttft_ms_sum,
        "ttft_count": F("ttft_count") + counts.ttft_count,
        "queue_ms_sum": F("queue_ms_sum") + counts.queue_ms_sum,
        "cold_starts": F("cold_starts") + counts.cold_starts,
    }
    same = UsageMinute.objects.filter(minute=minute, key=UUID(key_id), served_name=served_name)
    for _ in range(2):  # another gateway may insert the row between our update and insert
        if same.update(**increments):
            return
        deployment = Deployment.objects.filter(pk=counts.deployment_id).first()
        try:
            with transaction.atomic():
                UsageMinute.objects.create(
                    minute=minute, key_id=key_id, served_name=served_name, deployment=deployment,
                    requests=counts.requests, errors=counts.errors,
                    prompt_tokens=counts.prompt_tokens,
                    completion_tokens=counts.completion_tokens,
                    ttft_ms_sum=counts.ttft_ms_sum, ttft_count=counts.ttft_count,
                    queue_ms_sum=counts.queue_ms_sum, cold_starts=counts.cold_starts,
                )  # fmt: skip
            return
        except IntegrityError:
            continue
    logger.warning("usage of %s for %s lost: the row could not be written", key_id, served_name)
