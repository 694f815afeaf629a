from django.urls import path

from gateway.views import keys, usage

app_name = "gateway"

urlpatterns = [
    path("keys/", keys.key_list, name="keys"),
    path("keys/<uuid:key_id>/revoke/", keys.key_revoke, name="key-revoke"),
    path("usage/", usage.usage, name="usage"),
]
