"""Server-side fetches of URLs people give: only to public addresses, pinned to them.

A URL's host is read the way the HTTP client reads it (``httpx.URL``), as an IP
literal in every form ``inet_aton`` accepts (``2130706433``, ``0x7f.1``,
``0177.0.0.1``, ``127.1``) or IPv6 (v4-mapped, NAT64 and 6to4 addresses are judged by
the IPv4 address inside), else resolved (``getaddrinfo``). Every address must be
public (``is_global`` and none of loopback, private, link-local, multicast, reserved,
unspecified, site-local) unless the allow-list names its network or the host.

The check sits in the connection itself: ``GuardedBackend`` is an httpcore network
backend that vets the host of each new connection and connects to the vetted address,
while httpx keeps the ``Host`` header and httpcore the TLS server name (and certificate
check) on the host name. DNS is asked once per connection and cannot answer
differently between check and connect, and every redirect hop opens its connection
through the same check. Pure: no Django; the policy comes from a provider that the
app installs (``configure``), strict until then.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[IPAddress]]

REFUSED_MESSAGE = (
    "This URL points to an address gpufleet does not fetch from (private, loopback or "
    "reserved); an operator can allow it with GPUFLEET_FETCH_ALLOW."
)
SCHEME_MESSAGE = "Only http:// and https:// URLs can be fetched."
UNREACHABLE_MESSAGE = "The server of this URL could not be reached."

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class FetchRefused(ValueError):
    """A URL gpufleet will not fetch; the message is safe to show (says nothing about
    ports or reachability)."""

    def __init__(self, message: str = REFUSED_MESSAGE) -> None:
        super().__init__(message)
        self.message = message


def _inet_aton_part(text: str) -> int | None:
    if text[:2].lower() == "0x":
        digits, base = text[2:], 16
    elif len(text) > 1 and text.startswith("0"):
        digits, base = text[1:], 8
    else:
        digits, base = text, 10
    allowed = "0123456789abcdef"[:base]
    if not digits or any(c not in allowed for c in digits.lower()):
        return None
    return int(digits, base)


def inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """``text`` as the C library's ``inet_aton`` reads it (1 to 4 parts, each decimal,
    octal or hex; the last fills the remaining bytes), or None."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_inet_aton_part(part) for part in parts]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        return None
    value = 0
    for n in head:
        value = (value << 8) | n
    return ipaddress.IPv4Address((value << (8 * (5 - len(values)))) | last)


def normalize_host(host: str) -> str:
    """Lower-case, without IPv6 brackets or the root's trailing dot, IDN as ASCII."""
    name = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        raise FetchRefused() from None


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells (any IPv4 form ``inet_aton`` takes, or IPv6), or None."""
    name = normalize_host(host)
    try:
        return ipaddress.ip_address(name.partition("%")[0] if ":" in name else name)
    except ValueError:
        return inet_aton(name)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_public(ip: IPAddress) -> bool:
    """True for an address on the public internet; v4 inside v6 is judged as v4."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return is_public(inner)
        if ip.is_site_local:
            return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


@dataclass(frozen=True)
class AllowList:
    """Networks and host names fetched from even when not public."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """From CIDRs, addresses and host names; ValueError names a bad entry."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            hosts.add(_host_name(entry))
        return cls(tuple(networks), frozenset(hosts))

    def allows(self, host: str, ip: IPAddress) -> bool:
        if host in self.hosts:
            return True
        inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        return any(
            candidate in network
            for candidate in (ip, inner)
            if candidate is not None
            for network in self.networks
            if candidate.version == network.version
        )


def check_allow_entry(entry: str) -> str:
    """``entry`` if it is a CIDR, an address or a host name (for the settings parser)."""
    AllowList.parse([entry])
    return entry


def _host_name(entry: str) -> str:
    try:
        name = normalize_host(entry)
    except FetchRefused:
        name = ""
    if not name or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(f"{entry!r} is neither a network (CIDR), an address nor a host name")
    return name


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address ``getaddrinfo`` gives for ``host`` (empty when it gives none)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, address in infos:
        ip = ipaddress.ip_address(str(address[0]).partition("%")[0])
        if ip not in found:
            found.append(ip)
    return found


@dataclass(frozen=True)
class FetchPolicy:
    """What may be fetched: public addresses, ``allow``, and ``trusted`` origins
    (host, port) an operator configured (the Hugging Face endpoint)."""

    allow: AllowList = field(default_factory=AllowList)
    trusted: frozenset[tuple[str, int]] = frozenset()
    resolver: Resolver | None = None  # None: ``system_resolver`` (looked up when used)

    def vet(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to for ``host``; FetchRefused unless all may be used."""
        name = normalize_host(host)
        literal = ip_literal(name)
        resolve = self.resolver or system_resolver
        addresses = [literal] if literal is not None else resolve(name, port)
        if not addresses:
            raise FetchRefused(UNREACHABLE_MESSAGE)
        if (name, port) in self.trusted:
            return addresses
        for ip in addresses:
            if not is_public(ip) and not self.allow.allows(name, ip):
                raise FetchRefused()
        return addresses

    def check_url(self, url: str) -> list[IPAddress]:
        """Vet ``url`` before fetching it (scheme, then host); see ``vet``."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise FetchRefused(_unparsable(url)) from None
        if parsed.scheme not in _DEFAULT_PORTS or not parsed.host:
            raise FetchRefused(SCHEME_MESSAGE)
        host = parsed.raw_host.decode("ascii")  # IDN as the client sends it
        return self.vet(host, parsed.port or _DEFAULT_PORTS[parsed.scheme])


def _unparsable(url: str) -> str:
    """Why a URL the client cannot parse is refused (``0177.0.0.1`` is one: httpx reads
    it as a bad IPv4 address, ``inet_aton`` as 127.0.0.1)."""
    try:
        literal = ip_literal(urlsplit(url).hostname or "")
    except (ValueError, FetchRefused):
        literal = None
    return REFUSED_MESSAGE if literal is not None and not is_public(literal) else SCHEME_MESSAGE


_provider: Callable[[], FetchPolicy] = FetchPolicy


def configure(provider: Callable[[], FetchPolicy]) -> None:
    """Install where the policy comes from (asked at each connection)."""
    global _provider
    _provider = provider


def current_policy() -> FetchPolicy:
    return _provider()


def check_url(url: str, policy: FetchPolicy | None = None) -> list[IPAddress]:
    return (policy or current_policy()).check_url(url)


class GuardedBackend(httpcore.NetworkBackend):
    """Connects only to vetted addresses: the host of each connection is vetted and the
    socket opened to the address vetted, never to a second DNS answer."""

    def __init__(
        self, policy: FetchPolicy | None = None, inner: httpcore.NetworkBackend | None = None
    ) -> None:
        self._policy = policy
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        policy = self._policy or current_policy()
        failure: Exception | None = None
        for ip in policy.vet(host, port):
            try:
                return self._inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise FetchRefused()

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport over ``GuardedBackend`` (httpx takes no backend argument, so
    the pool it built is replaced by the same pool with the guarded backend)."""

    def __init__(
        self,
        policy: FetchPolicy | None = None,
        inner: httpcore.NetworkBackend | None = None,
        verify: bool = True,
    ) -> None:
        super().__init__(verify=verify)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            network_backend=GuardedBackend(policy, inner),
        )


def guarded_client(policy: FetchPolicy | None = None, **kwargs: Any) -> httpx.Client:
    """An httpx client whose every connection (redirect hops too) goes through the guard.
    A custom transport also keeps httpx from using proxies from the environment."""
    return httpx.Client(transport=GuardedTransport(policy), **kwargs)
