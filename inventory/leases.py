"""Roles that one process holds at a time, elected with a lease in the database.

``hold(name, holder, ttl)`` takes the lease when it is free or has lapsed, or renews it
when ``holder`` has it, in one conditional UPDATE (or one INSERT the first time; the
primary key arbitrates between two processes inserting at once). The holder renews it
more often than ``ttl``; when it dies, another process takes over once ``ttl`` has
passed. Works on SQLite and PostgreSQL alike (no advisory lock held on a connection
that a restart of the database would drop).
"""

from __future__ import annotations

from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from inventory.models import Lease

HOUSEKEEPER = "housekeeper"


def hold(name: str, holder: str, ttl: float) -> bool:
    """True when ``holder`` holds the lease ``name`` for the next ``ttl`` seconds."""
    now = timezone.now()
    until = now + timedelta(seconds=ttl)
    lease = Lease.objects.filter(name=name)
    if lease.filter(holder=holder).update(expires_at=until):
        return True  # renewed
    if lease.filter(expires_at__lt=now).update(holder=holder, acquired_at=now, expires_at=until):
        return True  # taken over from a holder that stopped renewing
    try:
        with transaction.atomic():
            Lease.objects.create(name=name, holder=holder, acquired_at=now, expires_at=until)
    except IntegrityError:  # another process holds it, or inserted it just now
        return False
    return True


def release(name: str, holder: str) -> None:
    """Give the lease up at once (a clean stop): another process may take it now."""
    Lease.objects.filter(name=name, holder=holder).delete()


def lapses_in(name: str) -> float:
    """Seconds until the lease ``name`` lapses unless renewed (0 when nobody holds it):
    when a process standing by should try to take it over."""
    expires_at = Lease.objects.filter(name=name).values_list("expires_at", flat=True).first()
    if expires_at is None:
        return 0.0
    return max(0.0, (expires_at - timezone.now()).total_seconds())


def holder_of(name: str) -> str | None:
    now = timezone.now()
    return (
        Lease.objects.filter(name=name, expires_at__gte=now)
        .values_list("holder", flat=True)
        .first()
    )
