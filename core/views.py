from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, URLResolver, reverse


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


def permission_guarded(patterns: Sequence[URLPattern | URLResolver], perm: str) -> list[URLPattern | URLResolver]:
    """The same URL patterns, each view behind `staff_permission_required(perm)` (includes too).

    django-rq's views only require staff; our roles say only Ops (and admins) see queues, under
    whichever prefix they are mounted (config/urls.py and its admin entry, core/admin.py)."""
    return patterns_wrapped(patterns, staff_permission_required(perm))


def patterns_wrapped(patterns: Sequence[URLPattern | URLResolver],
                     decorator: Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]],
                     ) -> list[URLPattern | URLResolver]:
    """The same URL patterns (includes too), each view wrapped in `decorator`: for third-party
    views we mount but do not write (django-rq's)."""
    return [
        URLPattern(p.pattern, decorator(p.callback), p.default_args, p.name) if isinstance(p, URLPattern)
        else URLResolver(p.pattern, patterns_wrapped(p.url_patterns, decorator), p.default_kwargs, p.app_name,
                         p.namespace)
        for p in patterns
    ]


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


def admin_home(request: HttpRequest) -> HttpResponse:
    """/admin/ per role (issue 19): Sales land on the leads, Ops on the operations page, marketers
    on their dashboard above the admin index. `?all=1` is the plain index for everyone."""
    from django.contrib import admin
    from django.shortcuts import redirect

    from core.dashboard import marketer_dashboard
    from core.navigation import home_url

    target = home_url(request.user)
    if target and "all" not in request.GET:
        return redirect(target)
    extra: dict[str, Any] = {}
    if request.user.has_perm("contacts.change_contact") and "all" not in request.GET:
        extra = {"dashboard": marketer_dashboard(), "title": "Home"}
    return admin.site.index(request, extra_context=extra)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """The 403 page in the admin's look: what was refused, the user's roles, where they can go."""
    from django.contrib import admin
    from django.template.response import TemplateResponse

    user = request.user
    roles = sorted(user.groups.values_list("name", flat=True)) if user.is_authenticated else []
    context = {**(admin.site.each_context(request) if user.is_authenticated else {}), "title": "Not allowed",
               "path": request.path, "roles": roles, "reason": str(exception or "")}
    response = TemplateResponse(request, "403.html", context, status=403)
    return response.render()
