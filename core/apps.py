from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The pieces every app shares: the live-event sender and its outbox, the websocket
    base, sessions that end their sockets, access checks, size units."""

    name = "core"
    verbose_name = "Live events"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_out
        from django.db.models.signals import post_delete, post_save

        from core import sessions

        user_logged_out.connect(sessions.on_logged_out, dispatch_uid="gpufleet-ws-logout")
        user = get_user_model()
        post_save.connect(sessions.on_user_saved, sender=user, dispatch_uid="gpufleet-ws-user")
        post_delete.connect(sessions.on_user_saved, sender=user, dispatch_uid="gpufleet-ws-del")
