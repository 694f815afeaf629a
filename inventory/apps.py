from typing import Any

from django.apps import AppConfig


class InventoryConfig(AppConfig):
    name = "inventory"
    verbose_name = "Inventory"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_out
        from django.db.models.signals import post_delete, post_migrate, post_save

        from inventory import sessions

        user_logged_out.connect(sessions.on_logged_out, dispatch_uid="gpufleet-ws-logout")
        user = get_user_model()
        post_save.connect(sessions.on_user_saved, sender=user, dispatch_uid="gpufleet-ws-user")
        post_delete.connect(sessions.on_user_saved, sender=user, dispatch_uid="gpufleet-ws-del")
        post_migrate.connect(_create_cache_table, sender=self, dispatch_uid="gpufleet-cache")


def _create_cache_table(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """The database cache (the API's bad-token counter, see ``inventory.throttle``) needs
    its table; ``migrate`` makes it so, and leaves an existing one alone."""
    from django.core.management import call_command

    call_command("createcachetable", database=using, verbosity=0)
