from django.apps import AppConfig


class SchedulingConfig(AppConfig):
    name = "scheduling"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from inventory.models.gpus import answer_backend_pids_with
        from scheduling.models import backend_pids

        answer_backend_pids_with(backend_pids)  # inventory asks; scheduling owns instances
