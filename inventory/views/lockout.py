"""The page django-axes shows a locked-out login (``AXES_LOCKOUT_CALLABLE``)."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    cooloff = settings.AXES_COOLOFF_TIME.total_seconds()
    context = {
        "failures": settings.AXES_FAILURE_LIMIT,
        "minutes": max(1, math.ceil(cooloff / 60)),
    }
    response = render(request, "login_locked.html", context, status=429)
    response["Retry-After"] = str(math.ceil(cooloff))
    return response
