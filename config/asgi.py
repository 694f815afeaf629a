import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from config.routing import websocket_fallback  # noqa: E402
from gateway.app import gateway  # noqa: E402
from inventory.routing import websocket_urlpatterns as inventory_sockets  # noqa: E402
from inventory.watchdog import watchdog  # noqa: E402
from models_app.routing import websocket_urlpatterns as models_sockets  # noqa: E402
from scheduling.routing import websocket_urlpatterns as scheduling_sockets  # noqa: E402

router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                URLRouter(
                    inventory_sockets + models_sockets + scheduling_sockets + websocket_fallback
                )
            )
        ),
    }
)


def is_gateway(scope: dict[str, Any]) -> bool:
    path = scope.get("path", "")
    return scope["type"] == "http" and (path == "/v1" or path.startswith("/v1/"))


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The OpenAI-compatible gateway for /v1 (no Django on that path), the router for
    the rest, plus this process's liveness watchdog started on first use."""
    watchdog.ensure_started()
    if is_gateway(scope):
        await gateway(scope, receive, send)
        return
    await router(scope, receive, send)
