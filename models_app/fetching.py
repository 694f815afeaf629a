"""The fetch policy of this installation: ``GPUFLEET_FETCH_ALLOW``, and the Hugging Face
endpoint an operator configured (``HF_ENDPOINT``), which is trusted as it is set now."""

from __future__ import annotations

import httpx
from django.conf import settings

from models_app.fetch_guard import AllowList, FetchPolicy, normalize_host
from models_app.transfer.sources import hub_endpoint

_PORTS = {"http": 80, "https": 443}


def fetch_policy() -> FetchPolicy:
    allow = AllowList.parse(getattr(settings, "GPUFLEET_FETCH_ALLOW", []))
    hub = httpx.URL(hub_endpoint())
    trusted: frozenset[tuple[str, int]] = frozenset()
    if hub.scheme in _PORTS and hub.host:
        origin = (normalize_host(hub.raw_host.decode("ascii")), hub.port or _PORTS[hub.scheme])
        trusted = frozenset({origin})
    return FetchPolicy(allow=allow, trusted=trusted)
