# Placeholder: replaced by the alerts page work.
from django.http import HttpRequest, HttpResponse


def alert_list(request: HttpRequest) -> HttpResponse:
    return HttpResponse(status=501)
