"""The client's address behind reverse proxies: X-Forwarded-For is believed only from
trusted proxies (``GPUFLEET_TRUSTED_PROXIES``), the right-most untrusted address is the
client, and login lockout, the bad-token throttle and their logs all use it."""

from __future__ import annotations

import logging

import pytest
from axes.models import AccessAttempt
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory

from config.env import parse_checked_list
from inventory.proxies import check_proxy_entry, client_ip, parse_address
from tests.factories import UserFactory

PROXY = "10.0.0.254"
PASSWORD = "the-right-password"
BAD_TOKEN = {"Authorization": "Bearer gpf_not-a-real-token"}


def ip_of(remote_addr: str, forwarded_for: str | None = None) -> str | None:
    extra = {} if forwarded_for is None else {"HTTP_X_FORWARDED_FOR": forwarded_for}
    return client_ip(RequestFactory().get("/", REMOTE_ADDR=remote_addr, **extra))


@pytest.fixture
def behind_proxy(settings):
    settings.GPUFLEET_TRUSTED_PROXIES = ["10.0.0.0/24", "fd00::/8"]


# -- which address is the client's -----------------------------------------------------


def test_the_header_is_ignored_without_trusted_proxies(settings):
    assert settings.GPUFLEET_TRUSTED_PROXIES == []
    assert ip_of("198.51.100.9", "203.0.113.7") == "198.51.100.9"
    assert ip_of(PROXY, "203.0.113.7") == PROXY


def test_the_header_is_ignored_from_a_peer_that_is_not_a_trusted_proxy(behind_proxy):
    assert ip_of("198.51.100.9", "203.0.113.7") == "198.51.100.9"


def test_a_trusted_proxy_names_the_client(behind_proxy):
    assert ip_of(PROXY, "203.0.113.7") == "203.0.113.7"
    assert ip_of(PROXY) == PROXY  # no header: the proxy itself (say, its health check)


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        # client → proxy 10.0.0.9 → proxy 10.0.0.254 (the peer)
        ("203.0.113.7, 10.0.0.9", "203.0.113.7"),
        # what the client wrote itself comes first and is ignored
        ("192.0.2.66, 203.0.113.7, 10.0.0.9", "203.0.113.7"),
        # a client forging a trusted proxy's address is still itself
        ("10.0.0.8, 203.0.113.7, 10.0.0.9", "203.0.113.7"),
        ("192.0.2.66,203.0.113.7,10.0.0.9", "203.0.113.7"),
        # every hop trusted: the left-most one is the client
        ("10.0.0.3, 10.0.0.9", "10.0.0.3"),
    ],
)
def test_a_chain_of_proxies_yields_the_right_most_untrusted_address(
    behind_proxy, forwarded_for, client
):
    assert ip_of(PROXY, forwarded_for) == client


def test_several_header_lines_are_one_chain(behind_proxy):
    # Django joins repeated headers with a comma, as HTTP says they mean
    request = RequestFactory().get(
        "/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="192.0.2.66,203.0.113.7,10.0.0.9"
    )
    assert client_ip(request) == "203.0.113.7"


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ("2001:db8::7", "2001:db8::7"),
        ("[2001:db8::7]:4711", "2001:db8::7"),
        ("2001:DB8:0:0::7", "2001:db8::7"),
        ("fe80::7%eth0", "fe80::7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("203.0.113.7:5123", "203.0.113.7"),
        ("  203.0.113.7  ", "203.0.113.7"),
        ("203.0.113.7, fd00::9", "203.0.113.7"),
    ],
)
def test_address_forms_proxies_write_are_read(behind_proxy, forwarded_for, client):
    assert ip_of(PROXY, forwarded_for) == client


def test_an_ipv6_proxy_and_a_v4_mapped_peer_are_trusted(behind_proxy):
    assert ip_of("fd00::1", "203.0.113.7") == "203.0.113.7"
    assert ip_of("::ffff:10.0.0.254", "203.0.113.7") == "203.0.113.7"


GARBAGE = [
    "",
    " ",
    ",,,",
    "unknown",
    "not-an-ip",
    "proxy.example.org",
    "203.0.113.7.1",
    "256.1.1.1",
    "203.0.113.7:port",
    "203.0.113.7:123456",
    "[2001:db8::7",
    "[2001:db8::7]x",
    "2001:db8::7::1",
    "_hidden",
    "\x00",
    "203.0.113.7\x00",
    "١٢٣.1.1.1",
    "x" * 10_000,
    ", ".join(["garbage"] * 2_000),
]


@pytest.mark.parametrize("value", GARBAGE, ids=range(len(GARBAGE)))
def test_a_malformed_entry_ends_the_chain_at_the_last_address_known(behind_proxy, value):
    assert ip_of(PROXY, value) == PROXY
    assert ip_of(PROXY, f"192.0.2.66, {value}") == PROXY  # nothing left of it believed
    assert ip_of(PROXY, f"{value}, 203.0.113.7") == "203.0.113.7"
    assert ip_of("198.51.100.9", value) == "198.51.100.9"


def test_a_missing_or_odd_peer_address_is_unknown(behind_proxy):
    request = RequestFactory().get("/", HTTP_X_FORWARDED_FOR="203.0.113.7")
    del request.META["REMOTE_ADDR"]
    assert client_ip(request) is None
    assert ip_of("", "203.0.113.7") is None
    assert ip_of("not-an-ip", "203.0.113.7") is None


def test_parse_address_refuses_names_and_reads_ports():
    assert parse_address("localhost") is None
    assert str(parse_address("[::1]:80")) == "::1"


# -- the setting -----------------------------------------------------------------------


def test_the_setting_takes_networks_and_addresses():
    env = {"GPUFLEET_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1 ,fd00::/8,10.1.2.3/16"}
    assert parse_checked_list("GPUFLEET_TRUSTED_PROXIES", [], check_proxy_entry, env) == [
        "10.0.0.0/8",
        "192.0.2.1",
        "fd00::/8",
        "10.1.2.3/16",
    ]


@pytest.mark.parametrize("value", ["proxy.example.org", "10.0.0.0/33", "10.0.0.*", "::g"])
def test_the_setting_refuses_anything_else_naming_the_variable(value):
    with pytest.raises(ImproperlyConfigured, match="GPUFLEET_TRUSTED_PROXIES"):
        parse_checked_list(
            "GPUFLEET_TRUSTED_PROXIES", [], check_proxy_entry, {"GPUFLEET_TRUSTED_PROXIES": value}
        )


# -- login lockout -----------------------------------------------------------------------


@pytest.fixture
def person(db):
    user = UserFactory(username="person")
    user.set_password(PASSWORD)
    user.save()
    return user


def login(username: str, password: str, addr: str, forwarded_for: str | None = None):
    extra = {} if forwarded_for is None else {"HTTP_X_FORWARDED_FOR": forwarded_for}
    data = {"username": username, "password": password}
    return Client().post("/login/", data, REMOTE_ADDR=addr, **extra)


def test_a_forged_header_does_not_dodge_the_address_lockout(person):
    for i in range(5):
        login(f"guess-{i}", "wrong", "198.51.100.9", forwarded_for=f"203.0.113.{i}")
    assert login("person", PASSWORD, "198.51.100.9", "203.0.113.99").status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.9"}


def test_a_forged_header_does_not_lock_someone_else_out(person):
    for i in range(5):
        login(f"guess-{i}", "wrong", "198.51.100.9", forwarded_for="198.51.100.10")
    assert login("person", PASSWORD, "198.51.100.10").status_code == 302


def test_behind_a_trusted_proxy_each_client_is_locked_out_on_its_own(behind_proxy, person):
    for i in range(5):  # the attacker also forges the other client's address
        login(f"guess-{i}", "wrong", PROXY, forwarded_for="203.0.113.2, 203.0.113.1")
    assert login("person", PASSWORD, PROXY, "203.0.113.1").status_code == 429
    assert login("person", PASSWORD, PROXY, "203.0.113.2").status_code == 302
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.1"}


def test_the_lockout_log_names_the_client_behind_the_proxy(behind_proxy, person, caplog):
    with caplog.at_level(logging.WARNING, logger="axes"):
        login("person", "wrong", PROXY, forwarded_for="203.0.113.1")
    assert "203.0.113.1" in caplog.text
    assert PROXY not in caplog.text


HEADERS = ["", ",,,", "unknown", "[2001:db8::7", "\x00", "x" * 10_000, "2001:db8::7"]


@pytest.mark.parametrize("value", HEADERS, ids=range(len(HEADERS)))
@pytest.mark.parametrize("trusted", [False, True])
def test_malformed_headers_never_break_a_login(settings, person, value, trusted):
    if trusted:
        settings.GPUFLEET_TRUSTED_PROXIES = ["10.0.0.0/24"]
    assert login("person", "wrong", PROXY, forwarded_for=value).status_code == 200
    assert login("person", PASSWORD, PROXY, forwarded_for=value).status_code == 302


# -- the bad-token throttle ------------------------------------------------------------------


@pytest.fixture
def token_limit(settings, db):
    from django.core.cache import cache

    cache.clear()
    settings.GPUFLEET_TOKEN_FAILURES = 3
    settings.GPUFLEET_TOKEN_FAILURE_WINDOW = 300.0


def api(addr: str, forwarded_for: str | None = None, path: str = "/api/v1/nodes") -> int:
    extra = {} if forwarded_for is None else {"HTTP_X_FORWARDED_FOR": forwarded_for}
    return Client(headers=BAD_TOKEN).get(path, REMOTE_ADDR=addr, **extra).status_code


def test_a_forged_header_does_not_dodge_the_token_throttle(token_limit):
    statuses = [api("198.51.100.9", f"203.0.113.{i}") for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    assert api("198.51.100.10") == 401  # and locks nobody else out


def test_behind_a_trusted_proxy_the_token_throttle_is_per_client(behind_proxy, token_limit, caplog):
    with caplog.at_level(logging.WARNING, logger="inventory.throttle"):
        statuses = [api(PROXY, "203.0.113.2, 203.0.113.1") for _ in range(4)]
    logged = [r.getMessage() for r in caplog.records if r.name == "inventory.throttle"]
    assert statuses == [401, 401, 401, 429]
    assert api(PROXY, "203.0.113.2") == 401
    assert len(logged) == 3
    assert all(m.startswith("bad API token from 203.0.113.1 on /api/v1/nodes") for m in logged)


@pytest.mark.parametrize("value", HEADERS, ids=range(len(HEADERS)))
def test_malformed_headers_never_break_the_api(behind_proxy, token_limit, value):
    assert api(PROXY, value, "/api/v1/nodes") in (401, 429)
    assert api(PROXY, value, "/metrics") in (401, 429)
