from django.urls import path

from inventory.consumers import FleetConsumer

websocket_urlpatterns = [path("ws/fleet/", FleetConsumer.as_asgi())]
