"""manage.py bootstrap: an admin user and this node, safe to run again."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from inventory.models import Node
from inventory.probe import ProbeUnavailable

pytestmark = pytest.mark.django_db
PASSWORD_LINE = re.compile(r"with password: (\S+)")


@pytest.fixture(autouse=True)
def _environment(monkeypatch, settings, tmp_path):
    monkeypatch.delenv("GPUFLEET_ADMIN_USER", raising=False)
    monkeypatch.delenv("GPUFLEET_ADMIN_PASSWORD", raising=False)
    settings.NODE_NAME = "boot-node"
    settings.GPUFLEET_NODE_ADDRESS = "10.0.0.7"
    settings.GPUFLEET_GPU_PROBE = "simulated"
    settings.GPUFLEET_SIMULATED_GPUS = "2xA100-80GB,1xRTX4090"
    settings.STATE_DIR = tmp_path


@pytest.fixture
def no_driver(monkeypatch, settings):
    def _raise(self):
        raise ProbeUnavailable("No NVIDIA driver found (NVML: Driver Not Loaded).")

    monkeypatch.setattr("inventory.probe.nvml.NvmlProbe.__init__", _raise)
    settings.GPUFLEET_SIMULATED_GPUS = ""


def bootstrap() -> str:
    out = StringIO()
    call_command("bootstrap", stdout=out)
    return out.getvalue()


def test_it_creates_the_admin_with_a_generated_password_printed_once():
    first = bootstrap()
    password = PASSWORD_LINE.search(first).group(1)
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert admin.check_password(password)
    assert password not in admin.password  # only the hash is stored

    second = bootstrap()
    assert "Admin user 'admin' exists." in second
    assert "password" not in second and password not in second
    assert get_user_model().objects.filter(username="admin").count() == 1


def test_it_takes_name_and_password_from_the_environment(monkeypatch):
    monkeypatch.setenv("GPUFLEET_ADMIN_USER", "root-op")
    monkeypatch.setenv("GPUFLEET_ADMIN_PASSWORD", "correct horse battery")
    out = bootstrap()
    assert "correct horse battery" not in out
    user = get_user_model().objects.get(username="root-op")
    assert user.is_superuser and user.check_password("correct horse battery")


def test_it_never_changes_an_existing_admins_password(monkeypatch):
    bootstrap()
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("chosen-by-operator")
    admin.save()
    monkeypatch.setenv("GPUFLEET_ADMIN_PASSWORD", "something else entirely")
    bootstrap()
    admin.refresh_from_db()
    assert admin.check_password("chosen-by-operator")


def test_it_rejects_a_too_short_password_with_one_line(monkeypatch):
    monkeypatch.setenv("GPUFLEET_ADMIN_PASSWORD", "short")
    with pytest.raises(CommandError, match="GPUFLEET_ADMIN_PASSWORD: This password is too short"):
        bootstrap()
    assert not get_user_model().objects.exists()


def test_it_registers_this_node_with_the_probes_gpus():
    out = bootstrap()
    node = Node.objects.get(name="boot-node")
    assert node.address == "10.0.0.7"
    assert node.probe_message == "Simulated GPUs: 2xA100-80GB,1xRTX4090."
    assert sorted(node.gpus.values_list("index", "name")) == [
        (0, "NVIDIA A100-SXM4-80GB"),
        (1, "NVIDIA A100-SXM4-80GB"),
        (2, "NVIDIA GeForce RTX 4090"),
    ]
    assert "registered with 3 GPU(s)" in out

    bootstrap()
    assert Node.objects.count() == 1 and node.gpus.count() == 3


@pytest.mark.usefixtures("no_driver")
def test_no_driver_registers_a_cpu_only_node_with_a_clear_message(settings):
    settings.GPUFLEET_GPU_PROBE = "auto"
    out = bootstrap()
    node = Node.objects.get(name="boot-node")
    assert node.gpus.count() == 0
    assert "No NVIDIA driver found (NVML: Driver Not Loaded). Running CPU-only." in out


@pytest.mark.usefixtures("no_driver")
def test_no_driver_when_nvml_is_required_is_one_line_not_a_traceback(settings):
    settings.GPUFLEET_GPU_PROBE = "nvml"
    with pytest.raises(CommandError) as excinfo:
        bootstrap()
    message = "GPU probe (nvml): No NVIDIA driver found (NVML: Driver Not Loaded)."
    assert str(excinfo.value) == message


def test_a_bad_simulated_spec_is_one_line(settings):
    settings.GPUFLEET_SIMULATED_GPUS = "2xB300"
    with pytest.raises(CommandError, match="unknown GPU model"):
        bootstrap()


def test_no_node_creates_the_admin_but_registers_no_node():
    out = StringIO()
    call_command("bootstrap", "--no-node", stdout=out)
    assert get_user_model().objects.filter(username="admin").exists()
    assert not Node.objects.exists()
