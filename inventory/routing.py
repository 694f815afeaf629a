from django.urls import path

from inventory.consumers import FleetConsumer
from inventory.node_live import NodeConsumer

websocket_urlpatterns = [
    path("ws/fleet/", FleetConsumer.as_asgi()),
    path("ws/nodes/<uuid:node_id>/", NodeConsumer.as_asgi()),
]
