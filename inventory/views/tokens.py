# Placeholder: replaced by the API token work.
from django.http import HttpRequest, HttpResponse


def token_list(request: HttpRequest) -> HttpResponse:
    return HttpResponse(status=501)


def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    return HttpResponse(status=501)
