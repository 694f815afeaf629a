# Placeholder: replaced by the Prometheus /metrics work.
from django.http import HttpRequest, HttpResponse


def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(status=501)
