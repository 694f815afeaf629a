"""Who may do what. Personas: admin (superuser), operator (member of the "operators"
group, which holds the inventory change permissions), viewer (any active user).

Pages and the API ask the same question through ``require_operator``; the API turns
its ``PermissionDenied`` into a 403 with the same sentence (config/api.py).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied

OPERATORS_GROUP = "operators"
OPERATOR_PERMISSION = "inventory.change_gpu"
OPERATOR_PERMISSIONS = (
    "change_gpu",
    "change_node",
    "add_maintenancewindow",
    "change_maintenancewindow",
    "delete_maintenancewindow",
)


def can_operate(user: Any, permission: str = OPERATOR_PERMISSION) -> bool:
    """An active, logged-in user holding ``permission`` (an operator's, by default)."""
    return bool(user.is_authenticated and user.is_active and user.has_perm(permission))


def require_operator(user: Any, what: str, permission: str = OPERATOR_PERMISSION) -> None:
    """Raise ``PermissionDenied("Only operators may <what>.")`` unless ``can_operate``."""
    if not can_operate(user, permission):
        raise PermissionDenied(f"Only operators may {what}.")
