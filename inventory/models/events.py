from django.db import models


class LiveEvent(models.Model):
    """Outbox of live events for the embedded default (no Redis): every process writes
    here after commit, and each web process relays new rows to its websocket clients.
    Rows older than a few minutes are pruned by the agent's housekeeping."""

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    payload = models.JSONField()

    def __str__(self) -> str:
        return f"event {self.id}"
