from __future__ import annotations

from django.db import models


class Lease(models.Model):
    """A role exactly one process holds at a time (``inventory.leases``): whoever holds
    it renews ``expires_at``; once it lapses, another process may take it."""

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=200)
    acquired_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder} until {self.expires_at:%H:%M:%S}"
