from django.apps import AppConfig


class ModelsAppConfig(AppConfig):
    name = "models_app"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from models_app import fetch_guard
        from models_app.fetching import fetch_policy

        fetch_guard.configure(fetch_policy)
