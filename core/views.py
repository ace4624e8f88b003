from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Readiness (DB, Redis, workers) is a separate probe."""
    return JsonResponse({"status": "ok"})
