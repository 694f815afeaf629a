"""No URL of the project answers an anonymous visitor, except the login page, the health
check and the API's schema: every URL pattern, found by walking the resolver and filled
with plausible values, must send anonymous GETs to a login page or refuse them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.resolvers import RegexPattern, RoutePattern

pytestmark = pytest.mark.django_db

# The only URLs anonymous visitors may read (the API's docs page may also send them to log in).
PUBLIC = {"/login/", "/admin/login/", "/healthz", "/api/v1/openapi.json", "/api/v1/docs"}
REFUSED = {401, 403, 404, 405}
LOGIN_PAGES = ("/login/", "/admin/login/")

_CONVERTER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>\w+)>")
_GROUP = re.compile(r"\(\?P<\w+>(?P<body>[^()]*)\)")
_LOOKAROUND = re.compile(r"\(\?<?[!=][^()]*\)")


def _value(converter: str | None) -> str:
    if converter in ("uuid", "uuidstr"):
        return str(uuid.uuid4())
    if converter == "int":
        return "1"
    return "x"  # str, slug, path and anything unknown


def _from_route(route: str) -> str:
    return _CONVERTER.sub(lambda m: _value(m.group("converter")), route)


def _from_regex(regex: str) -> str:
    def group(match: re.Match[str]) -> str:
        body = match.group("body")
        return body.split("|")[0] if re.fullmatch(r"[\w|]+", body) else "x"

    plain = _LOOKAROUND.sub("", _GROUP.sub(group, regex))
    return plain.replace("^", "").replace("$", "")


def _part(pattern: RoutePattern | RegexPattern | object) -> str:
    if isinstance(pattern, RegexPattern):
        return _from_regex(pattern._regex)
    if isinstance(pattern, RoutePattern):
        return _from_route(pattern._route)
    raise AssertionError(f"unknown pattern type: {pattern!r}")


def every_url(patterns: list[URLPattern | URLResolver], prefix: str = "/") -> Iterator[str]:
    for entry in patterns:
        here = prefix + _part(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from every_url(entry.url_patterns, here)
        else:
            yield here


URLS = sorted(set(every_url(get_resolver().url_patterns)))


def test_the_walk_finds_the_patterns_of_every_part_of_the_project():
    assert len(URLS) > 100
    for expected in ("/login/", "/admin/", "/api/v1/nodes", "/models/", "/deployments/", "/keys/"):
        assert expected in URLS
    assert any(url.startswith("/admin/auth/") for url in URLS)  # regex and converters filled
    for url in URLS:
        resolve(url)  # every filled-in URL reaches a view


@pytest.mark.parametrize("url", URLS)
def test_anonymous_visitors_are_sent_to_log_in_or_refused(anon_client, url):
    response = anon_client.get(url)
    if url in PUBLIC and response.status_code == 200:
        return
    if response.status_code == 302:
        assert response["Location"].startswith(LOGIN_PAGES), (url, response["Location"])
    else:
        assert response.status_code in REFUSED, (url, response.status_code)


def test_the_login_pages_health_check_and_api_schema_answer_anonymous_visitors(anon_client):
    for url in PUBLIC:
        assert url in URLS
    for url in ("/login/", "/admin/login/", "/healthz", "/api/v1/openapi.json"):
        assert anon_client.get(url).status_code == 200, url
