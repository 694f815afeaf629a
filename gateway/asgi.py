"""The gateway on its own (more replicas behind a load balancer):

    uvicorn gateway.asgi:application --host 0.0.0.0 --port 8001

Same settings (``DATABASE_URL``, ``REDIS_URL``) as the other processes.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from gateway.app import gateway as application  # noqa: E402

__all__ = ["application"]
