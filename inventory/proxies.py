"""The client's address, as login lockout, the API's bad-token throttle and their logs see it.

Behind a reverse proxy every request comes from the proxy (``REMOTE_ADDR``); the proxy
appends the address it saw to ``X-Forwarded-For``, and so does each proxy after it. The
header is believed only as far as trusted proxies wrote it (``GPUFLEET_TRUSTED_PROXIES``:
networks or addresses). Starting at the peer and walking the header from the right, each
trusted proxy hands over to the address it names; the first address that is not a trusted
proxy is the client (the right-most untrusted address). What lies left of it was written
by the client, so a forged header can neither dodge a lockout nor lock someone else out.
With no trusted proxies (the default) the header is ignored. An entry that is not an
address ends the walk at the last address known (a trusted proxy's).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:  # settings import this module: keep its imports light
    from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDED_FOR = "HTTP_X_FORWARDED_FOR"


def check_proxy_entry(entry: str) -> str:
    """``entry`` if it is a network (``10.0.0.0/8``, ``fd00::/8``) or an address."""
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise ValueError(f"{entry!r} is not a network (CIDR) or an IP address") from None
    return entry


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def trusted_networks() -> tuple[IPNetwork, ...]:
    """The networks of ``GPUFLEET_TRUSTED_PROXIES`` (read now: tests override it)."""
    return _networks(tuple(getattr(settings, "GPUFLEET_TRUSTED_PROXIES", ())))


def parse_address(text: str) -> IPAddress | None:
    """An address as a proxy writes it (``203.0.113.7``, ``203.0.113.7:5123``,
    ``2001:db8::7``, ``[2001:db8::7]:443``), an IPv4-mapped IPv6 address as its IPv4
    address; None for anything else (``unknown``, a name, garbage)."""
    host = _without_port(text.strip())
    if host is None:
        return None
    try:
        address = ipaddress.ip_address(host.partition("%")[0])  # no IPv6 zone
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _without_port(text: str) -> str | None:
    if text.startswith("["):  # [IPv6] or [IPv6]:port
        host, closed, rest = text[1:].partition("]")
        port_ok = not rest or (rest.startswith(":") and _is_port(rest[1:]))
        return host if closed and port_ok else None
    if text.count(":") == 1:  # IPv4:port (a bare IPv6 address has several colons)
        host, _, port = text.partition(":")
        return host if _is_port(port) else None
    return text


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5


def _is_trusted(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in networks)


def right_most_untrusted(
    peer: IPAddress, forwarded_for: str, networks: Sequence[IPNetwork]
) -> IPAddress:
    """The right-most address of ``peer`` and the ``X-Forwarded-For`` chain before it
    that is not a trusted proxy (or the last good one when the chain breaks off)."""
    address = peer
    hops = forwarded_for.split(",") if forwarded_for else []
    for hop in reversed(hops):
        if not _is_trusted(address, networks):
            break
        earlier = parse_address(hop)
        if earlier is None:
            break
        address = earlier
    return address


def client_ip(request: HttpRequest) -> str | None:
    """The client's address for ``request`` (see the module's doc), or None when the
    peer's address is unknown. django-axes calls it too (``AXES_CLIENT_IP_CALLABLE``)."""
    peer = parse_address(str(request.META.get("REMOTE_ADDR", "")))
    if peer is None:
        return None
    networks = trusted_networks()
    if not networks:
        return str(peer)
    forwarded_for = str(request.META.get(FORWARDED_FOR, ""))
    return str(right_most_untrusted(peer, forwarded_for, networks))
