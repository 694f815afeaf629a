"""HTTPS behind a proxy and the Content-Security-Policy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTTPS_WARNINGS = ("security.W004", "security.W008", "security.W012", "security.W016")
PRODUCTION = {
    "GPUFLEET_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "GPUFLEET_SSL_REDIRECT": "true",
    "GPUFLEET_HSTS_SECONDS": "31536000",
    "GPUFLEET_SECURE_COOKIES": "true",
}


def _check_deploy(tmp_path: Path, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_")}
    base |= {"GPUFLEET_STATE_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings"}
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout + done.stderr


def test_the_embedded_default_leaves_https_off(tmp_path):
    output = _check_deploy(tmp_path)
    assert all(code in output for code in HTTPS_WARNINGS)


def test_the_production_settings_silence_the_https_warnings(tmp_path):
    output = _check_deploy(tmp_path, **PRODUCTION)
    assert not [code for code in HTTPS_WARNINGS if code in output], output


def test_the_proxy_header_marks_requests_secure(client, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/login/", headers={"X-Forwarded-Proto": "https"}).status_code == 200
    assert client.get("/login/").status_code == 301
    assert client.get("/healthz").status_code != 301


@pytest.mark.django_db
def test_pages_carry_a_self_only_content_security_policy(viewer_client):
    policy = viewer_client.get("/")["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src-elem"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert "unsafe-eval" not in policy
