from typing import Any

from django.apps import AppConfig


class InventoryConfig(AppConfig):
    name = "inventory"
    verbose_name = "Inventory"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from core import events
        from inventory import fanout

        events.relay.hand_to(fanout.post)  # the overview's sockets take each event once
        post_migrate.connect(_create_cache_table, sender=self, dispatch_uid="gpufleet-cache")


def _create_cache_table(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """The database cache (the API's bad-token counter, see ``inventory.throttle``) needs
    its table; ``migrate`` makes it so, and leaves an existing one alone."""
    from django.core.management import call_command

    call_command("createcachetable", database=using, verbosity=0)
