from django.apps import AppConfig


class SchedulingConfig(AppConfig):
    name = "scheduling"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from inventory.answers import answer_with
        from scheduling.actions import do_remove_node
        from scheduling.models import backend_pids
        from scheduling.replacing import drain_report
        from scheduling.views.fragments import cold_starts

        # Inventory asks, scheduling owns deployments and instances (``inventory.answers``).
        answer_with(
            backend_pids=backend_pids,
            drain_report=drain_report,
            cold_starts=cold_starts,
            remove_node=do_remove_node,
        )
