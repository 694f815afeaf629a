"""Repeated failed logins lock the account and the address out (django-axes)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django.utils import timezone

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "the-right-password"


@pytest.fixture
def person():
    user = UserFactory(username="person", is_staff=True)
    user.set_password(PASSWORD)
    user.save()
    return user


def _post(client: Client, url: str, username: str, password: str, addr: str = "10.0.0.1"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=addr)


@pytest.mark.parametrize("url", ["/login/", "/admin/login/"])
def test_25_wrong_passwords_lock_the_account_and_refuse_the_right_one(person, url):
    client = Client()
    statuses = [_post(client, url, "person", f"wrong-{i}").status_code for i in range(25)]
    assert statuses[:4] == [200] * 4 and set(statuses[5:]) == {429}
    response = _post(client, url, "person", PASSWORD)
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert "Try again in 15 minutes" in response.content.decode()
    assert response["Retry-After"] == "900"
    assert "_auth_user_id" not in client.session


def test_the_account_is_locked_from_another_address_too(person):
    for i in range(5):
        _post(Client(), "/login/", "person", f"wrong-{i}", addr="10.0.0.1")
    assert _post(Client(), "/login/", "person", PASSWORD, addr="10.9.9.9").status_code == 429


def test_the_address_is_locked_for_other_accounts_too(person):
    for i in range(5):
        _post(Client(), "/login/", f"guess-{i}", "wrong", addr="10.0.0.1")
    assert _post(Client(), "/login/", "person", PASSWORD, addr="10.0.0.1").status_code == 429
    assert _post(Client(), "/login/", "person", PASSWORD, addr="10.0.0.2").status_code == 302


def test_the_lock_lifts_after_the_cooloff(person):
    for i in range(5):
        _post(Client(), "/login/", "person", f"wrong-{i}")
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    response = _post(Client(), "/login/", "person", PASSWORD)
    assert response.status_code == 302


def test_a_few_typos_do_not_lock_anyone_out(person):
    client = Client()
    for i in range(4):
        assert _post(client, "/login/", "person", f"wrong-{i}").status_code == 200
    assert _post(client, "/login/", "person", PASSWORD).status_code == 302


def test_failures_are_logged(person, caplog):
    with caplog.at_level(logging.INFO, logger="axes"):
        _post(Client(), "/login/", "person", "wrong")
    failures = [r.getMessage() for r in caplog.records if "New login failure" in r.getMessage()]
    assert failures and "10.0.0.1" in failures[0] and "/login/" in failures[0]
