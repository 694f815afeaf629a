# Placeholder: replaced by the GPU page work (detail, settings form, chart).
from django.http import HttpRequest, HttpResponse


def gpu_detail(request: HttpRequest, gpu_id: str) -> HttpResponse:
    return HttpResponse(status=501)


gpu_settings = gpu_chart = gpu_detail
