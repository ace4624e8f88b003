from collections.abc import Sequence

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from django.views.generic import RedirectView
from django_rq import urls as rq_urls

from core.rq_views import missing_queues_404
from core.views import healthz, metrics, readyz, staff_permission_required
from core.views_ops import operations, switch_toggle

admin.site.site_header = "Leadflow"
admin.site.site_title = "Leadflow"
admin.site.index_title = "Marketing automation"


def _guarded(patterns: Sequence[URLPattern | URLResolver], perm: str) -> list[URLPattern | URLResolver]:
    """django-rq's views only require staff; our roles say only Ops (and admins) see queues."""
    guard = staff_permission_required(perm)
    return [
        URLPattern(p.pattern, guard(p.callback), p.default_args, p.name) if isinstance(p, URLPattern) else p
        for p in patterns
    ]


urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("admin/operations/", operations, name="operations"),
    path("admin/operations/switch/<str:name>", switch_toggle, name="operations-switch"),
    path("api/v1/", include("contacts.api.urls")),
    path("api/v1/", include("campaigns.api_urls")),
    path("api/v1/crm/", include("automation.crm.urls")),
    path("e/", include("campaigns.urls")),
    path("leads/", include("scoring.urls")),
    path("admin/rq/", include((_guarded(missing_queues_404(rq_urls.urlpatterns), "django_rq.admin"), "django_rq"))),
    path("admin/", admin.site.urls),
]
