from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Readiness (DB, Redis, workers) is a separate probe."""
    return JsonResponse({"status": "ok"})


def staff_permission_required(perm: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Anonymous users go to the admin login; logged-in staff without `perm` get a 403."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path(), reverse("admin:login"))
            if not (user.is_active and user.is_staff and user.has_perm(perm)):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database and Redis answer and a worker is registered (503 otherwise)."""
    from core.ops import readiness

    state = readiness()
    return JsonResponse({"ready": state.ready, "database": state.database, "redis": state.redis,
                         "workers": state.workers}, status=200 if state.ready else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, read at scrape time. Needs `Authorization: Bearer <METRICS_TOKEN>`;
    with no token configured the endpoint is off (it would otherwise publish queue and failure counts)."""
    import hmac

    from django.conf import settings
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    from core.metrics import LeadflowCollector

    token = settings.METRICS_TOKEN
    if not token:
        return HttpResponse("metrics are disabled: set METRICS_TOKEN\n", status=404, content_type="text/plain")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        response = HttpResponse("send Authorization: Bearer <METRICS_TOKEN>\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry()
    registry.register(LeadflowCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
