"""``manage.py bootstrap``: make a fresh installation usable. Safe to run again.

* An admin user exists: ``GPUFLEET_ADMIN_USER`` (default ``admin``) with the password
  ``GPUFLEET_ADMIN_PASSWORD``, or else a generated one that is printed once, when the
  user is created, and stored only as Django's password hash.
* This machine is registered as a node with the GPUs its probe sees (``--no-node``
  skips it: a web or database machine of a cluster is not a node; its agent registers
  a GPU node by itself).
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.env import parse_str
from inventory.actions import do_register_node
from inventory.probe import ProbeUnavailable, get_probe


class Command(BaseCommand):
    help = "Create the admin user if missing and register this node. Safe to run again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-node",
            action="store_true",
            help="Do not register this machine as a node (a cluster's web machine).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.ensure_admin()
        if not options["no_node"]:
            self.register_node()

    def ensure_admin(self) -> None:
        username = parse_str("GPUFLEET_ADMIN_USER", "admin")
        user_model = get_user_model()
        if user_model.objects.filter(username=username).exists():
            self.stdout.write(f"Admin user {username!r} exists.")
            return
        password = parse_str("GPUFLEET_ADMIN_PASSWORD", "")
        generated = not password
        if generated:
            password = secrets.token_urlsafe(15)
        try:
            validate_password(password)
        except ValidationError as exc:
            raise CommandError(f"GPUFLEET_ADMIN_PASSWORD: {' '.join(exc.messages)}") from None
        user_model.objects.create_superuser(username=username, email="", password=password)
        if generated:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Created admin user {username!r} with password: {password}\n"
                    "  (shown only this once; change it after logging in)"
                )
            )
        else:
            self.stdout.write(f"Created admin user {username!r} (password from the environment).")

    def register_node(self) -> None:
        try:
            probe = get_probe(settings.NODE_NAME)
        except (ProbeUnavailable, ValueError) as exc:  # ValueError: a bad simulated spec
            raise CommandError(f"GPU probe ({settings.GPUFLEET_GPU_PROBE}): {exc}") from None
        try:
            devices = probe.devices()
            node = do_register_node(
                settings.NODE_NAME, settings.GPUFLEET_NODE_ADDRESS, devices, probe.message
            )
        finally:
            probe.close()
        self.stdout.write(
            f"Node {node.name} ({node.address}) registered with {len(devices)} GPU(s). "
            f"{probe.message}"
        )
