from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from django_rq import urls as rq_urls

from core.roles import QUEUES_PERMISSION
from core.rq_views import missing_queues_404
from core.views import admin_home, healthz, metrics, permission_guarded, readyz
from core.views_ops import operations, sender_resume, switch_toggle

admin.site.site_header = "Leadflow"
admin.site.site_title = "Leadflow"
admin.site.index_title = "Marketing automation"
# The role's pages bar (templates/admin/base_site.html) replaces the model sidebar, which took a
# fifth of a 1400 px screen from the tables (issue 19).
admin.site.enable_nav_sidebar = False


urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("admin/operations/", operations, name="operations"),
    path("admin/operations/switch/<str:name>", switch_toggle, name="operations-switch"),
    path("admin/operations/sender/<int:pk>/resume", sender_resume, name="operations-sender-resume"),
    path("api/v1/", include("contacts.api.urls")),
    path("api/v1/", include("campaigns.api_urls")),
    path("api/v1/", include("broadcasts.api_urls")),  # POST campaigns/<key>/send (issue 21)
    path("api/v1/crm/", include("automation.crm.urls")),
    path("e/", include("campaigns.urls")),
    path("f/", include("consent.urls")),  # signup forms and double opt-in confirmation (issue 20)
    path("leads/", include("scoring.urls")),
    # django-rq's views only require staff: each one needs the queues permission, here and under
    # django-rq's own admin entry (/admin/django_rq/dashboard/, core/admin.py).
    path("admin/rq/", include((permission_guarded(missing_queues_404(rq_urls.urlpatterns), QUEUES_PERMISSION),
                               "django_rq"))),
    # /admin/ itself: each role's home (core/navigation.py); every other admin URL is the admin's.
    path("admin/", admin.site.admin_view(admin_home), name="home"),
    path("admin/", admin.site.urls),
]

handler403 = "core.views.permission_denied"
