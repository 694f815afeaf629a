from django.db import models


class LiveEvent(models.Model):
    """Outbox of live events (see ``core.events``). Embedded default (no Redis): every
    process writes here after commit and each web process relays new rows to its
    websocket clients. Cluster: events kept while Redis is unreachable, sent once it is
    back. Rows older than a few minutes are pruned by the agent's housekeeping."""

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    payload = models.JSONField()

    class Meta:
        db_table = "inventory_liveevent"  # created by inventory's first migration

    def __str__(self) -> str:
        return f"event {self.id}"
