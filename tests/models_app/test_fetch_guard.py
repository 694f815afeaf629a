"""The fetch guard: which addresses URLs may reach, the allow-list, redirects, pinning."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import parse_checked_list
from models_app import fetch_guard
from models_app.fetch_guard import (
    REFUSED_MESSAGE,
    SCHEME_MESSAGE,
    AllowList,
    FetchPolicy,
    FetchRefused,
    guarded_client,
)
from models_app.transfer import resolve_url
from models_app.transfer.errors import AddressRefused

LOOPBACK = [ipaddress.ip_address("127.0.0.1")]


def resolver(table: dict[str, list[str]]) -> fetch_guard.Resolver:
    def resolve(host: str, port: int) -> list[fetch_guard.IPAddress]:
        return [ipaddress.ip_address(a) for a in table.get(host, [])]

    return resolve


def no_dns(host: str, port: int) -> list[fetch_guard.IPAddress]:
    raise AssertionError(f"{host} is an address: no DNS lookup expected")


STRICT = FetchPolicy(resolver=resolver({"localhost": ["127.0.0.1", "::1"]}))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/m.gguf",
        "http://localhost:8000/m.gguf",
        "http://LOCALHOST./m.gguf",
        "http://0.0.0.0/m.gguf",
        "http://2130706433/m.gguf",
        "http://0x7f.1/m.gguf",
        "http://0177.0.0.1/m.gguf",
        "http://127.1/m.gguf",
        "http://0x7f000001/m.gguf",
        "http://[::1]/m.gguf",
        "http://[::]/m.gguf",
        "http://[::ffff:127.0.0.1]/m.gguf",
        "http://[64:ff9b::7f00:1]/m.gguf",
        "http://[2002:7f00:1::]/m.gguf",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/m.gguf",
        "http://10.0.0.1/m.gguf",
        "http://172.16.0.1/m.gguf",
        "http://192.168.1.1/m.gguf",
        "http://100.64.0.1/m.gguf",
        "http://[fc00::1]/m.gguf",
        "http://[fec0::1]/m.gguf",
        "http://224.0.0.1/m.gguf",
        "http://[ff02::1]/m.gguf",
        "http://240.0.0.1/m.gguf",
        "http://255.255.255.255/m.gguf",
    ],
)
def test_it_refuses_every_form_of_a_non_public_address(url):
    with pytest.raises(FetchRefused) as caught:
        STRICT.check_url(url)
    assert caught.value.message == REFUSED_MESSAGE


@pytest.mark.parametrize(
    "host, expected",
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.2", "10.1.0.2"),
        ("0xA9.0xFE.0xA9.0xFE", "169.254.169.254"),
        ("[::1]", "::1"),
        ("example.org", None),
        ("1.2.3.4.5", None),
        ("256.0.0.1", None),
        ("08.0.0.1", None),
    ],
)
def test_it_reads_ip_literals_as_inet_aton_does(host, expected):
    found = fetch_guard.ip_literal(host)
    assert (str(found) if found else None) == expected


def test_literal_addresses_are_judged_without_a_dns_lookup():
    with pytest.raises(FetchRefused):
        FetchPolicy(resolver=no_dns).check_url("http://0x7f.1/m.gguf")


def test_public_addresses_and_names_resolving_to_them_pass():
    policy = FetchPolicy(resolver=resolver({"models.example.org": ["93.184.216.34"]}))
    assert policy.check_url("https://models.example.org/m.gguf") == [
        ipaddress.ip_address("93.184.216.34")
    ]
    assert policy.check_url("http://[2606:4700::1]/m.gguf")


def test_a_name_with_one_private_address_among_public_ones_is_refused():
    policy = FetchPolicy(resolver=resolver({"mixed.example.org": ["93.184.216.34", "10.0.0.5"]}))
    with pytest.raises(FetchRefused):
        policy.check_url("https://mixed.example.org/m.gguf")


def test_an_idn_host_is_resolved_by_its_ascii_name():
    seen: list[str] = []

    def resolve(host: str, port: int) -> list[fetch_guard.IPAddress]:
        seen.append(host)
        return [ipaddress.ip_address("10.0.0.1")]

    with pytest.raises(FetchRefused):
        FetchPolicy(resolver=resolve).check_url("http://bücher.example/m.gguf")
    assert seen == ["xn--bcher-kva.example"]


@pytest.mark.parametrize("url", ["ftp://example.org/m.gguf", "file:///etc/passwd", "gopher://x/"])
def test_only_http_and_https_are_fetched(url):
    with pytest.raises(FetchRefused) as caught:
        STRICT.check_url(url)
    assert caught.value.message == SCHEME_MESSAGE


def test_a_name_that_does_not_resolve_gets_a_generic_error():
    with pytest.raises(FetchRefused) as caught:
        STRICT.check_url("http://nowhere.invalid/m.gguf")
    assert caught.value.message == fetch_guard.UNREACHABLE_MESSAGE


def test_the_allow_list_admits_networks_and_host_names():
    allow = AllowList.parse(["10.0.0.0/8", "fd00::/8", "Mirror.Lab", "192.168.1.7"])
    policy = FetchPolicy(allow=allow, resolver=resolver({"mirror.lab": ["172.16.0.9"]}))
    assert policy.check_url("http://10.0.0.1/m.gguf")
    assert policy.check_url("http://[fd00::1]/m.gguf")
    assert policy.check_url("http://mirror.lab:8080/m.gguf")
    assert policy.check_url("http://192.168.1.7/m.gguf")
    for refused in ("http://192.168.1.8/", "http://172.16.0.9/", "http://127.0.0.1/"):
        with pytest.raises(FetchRefused):
            policy.check_url(refused)


def test_an_allowed_ipv4_network_covers_its_v4_mapped_form():
    policy = FetchPolicy(allow=AllowList.parse(["127.0.0.0/8"]))
    assert policy.check_url("http://[::ffff:127.0.0.1]/m.gguf")


@pytest.mark.parametrize("raw", ["10.0.0.0/33", "not a host", "-bad-.lab", "10.0.0.0/8,http://x"])
def test_a_bad_allow_list_stops_start_up_naming_the_variable(raw):
    env = {"GPUFLEET_FETCH_ALLOW": raw}
    with pytest.raises(ImproperlyConfigured, match="GPUFLEET_FETCH_ALLOW"):
        parse_checked_list("GPUFLEET_FETCH_ALLOW", [], fetch_guard.check_allow_entry, env)


def test_a_good_allow_list_is_kept_as_given():
    env = {"GPUFLEET_FETCH_ALLOW": " 10.0.0.0/8, mirror.lab ,::1"}
    got = parse_checked_list("GPUFLEET_FETCH_ALLOW", [], fetch_guard.check_allow_entry, env)
    assert got == ["10.0.0.0/8", "mirror.lab", "::1"]


# --- real connections, to servers on 127.0.0.1 started here ------------------------------


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str]]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Host", "")))
        if self.path.startswith("/to/"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/to/"))
        else:
            self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_HEAD = do_GET


@contextmanager
def recording_server() -> Iterator[tuple[int, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_connection_goes_to_the_vetted_address_with_the_host_name_kept():
    calls: list[str] = []
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])

    def rebinding(host: str, port: int) -> list[fetch_guard.IPAddress]:
        calls.append(host)
        return [ipaddress.ip_address(a) for a in next(answers)]

    policy = FetchPolicy(allow=AllowList.parse(["127.0.0.1/32"]), resolver=rebinding)
    with recording_server() as (port, seen), guarded_client(policy) as client:
        response = client.get(f"http://model.test:{port}/m.gguf")
    assert response.status_code == 200
    assert calls == ["model.test"]  # asked once: the check and the connect use one answer
    assert seen == [("/m.gguf", f"model.test:{port}")]


def test_a_dns_answer_that_changes_after_a_check_is_caught_at_the_connection():
    answers = iter([["127.0.0.1"], ["127.0.0.2"]])
    policy = FetchPolicy(
        allow=AllowList.parse(["127.0.0.1/32"]),
        resolver=lambda host, port: [ipaddress.ip_address(a) for a in next(answers)],
    )
    with recording_server() as (port, seen), guarded_client(policy) as client:
        url = f"http://model.test:{port}/m.gguf"
        policy.check_url(url)
        with pytest.raises(FetchRefused):
            client.get(url)
    assert seen == []


def test_a_redirect_from_an_allowed_host_to_a_loopback_one_is_refused():
    policy = FetchPolicy(
        allow=AllowList.parse(["mirror.test"]), resolver=resolver({"mirror.test": ["127.0.0.1"]})
    )
    with recording_server() as (port, seen), guarded_client(policy) as client:
        ok = client.get(f"http://mirror.test:{port}/to//ok", follow_redirects=True)
        assert ok.status_code == 200
        with pytest.raises(FetchRefused):
            client.get(
                f"http://mirror.test:{port}/to/http://127.0.0.1:{port}/secret",
                follow_redirects=True,
            )
    assert [path for path, _ in seen] == [
        "/to//ok",
        "/ok",
        f"/to/http://127.0.0.1:{port}/secret",
    ]


def test_the_download_engine_refuses_a_redirect_to_loopback(settings, monkeypatch):
    settings.GPUFLEET_FETCH_ALLOW = ["mirror.test"]
    monkeypatch.setattr(fetch_guard, "system_resolver", resolver({"mirror.test": ["127.0.0.1"]}))
    with recording_server() as (port, seen):
        target = f"http://127.0.0.1:{port}/secret.gguf"
        with pytest.raises(AddressRefused, match="GPUFLEET_FETCH_ALLOW"):
            resolve_url(f"http://mirror.test:{port}/to/{target}")
    assert [path for path, _ in seen] == [f"/to/{target}"]


def test_the_default_policy_refuses_loopback_for_the_download_engine(settings):
    settings.GPUFLEET_FETCH_ALLOW = []
    with recording_server() as (port, seen), pytest.raises(AddressRefused):
        resolve_url(f"http://127.0.0.1:{port}/m.gguf")
    assert seen == []
