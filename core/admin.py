from django.contrib import admin
from django.http import HttpRequest
from django_rq.models import Dashboard

from core.models import Heartbeat, Incident
from core.rq_views import DashboardAdmin

# django-rq registered its dashboard entry first (it is earlier in INSTALLED_APPS); ours 404s for
# queues, workers and rows that do not exist instead of 500s.
if admin.site.is_registered(Dashboard):
    admin.site.unregister(Dashboard)
    admin.site.register(Dashboard, DashboardAdmin)


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ["name", "seen_at", "detail"]
    readonly_fields = ["name", "seen_at", "detail"]

    def has_add_permission(self, request: HttpRequest, obj: Heartbeat | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Heartbeat | None = None) -> bool:
        return False


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    """Alert history (core/alerts.py): read-only; incidents open and close themselves."""

    list_display = ["key", "summary", "opened_at", "notified_at", "resolved_at"]
    list_filter = ["resolved_at"]
    search_fields = ["key", "summary"]
    readonly_fields = ["key", "summary", "detail", "opened_at", "notified_at", "notify_error", "resolved_at"]

    def has_add_permission(self, request: HttpRequest, obj: Incident | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Incident | None = None) -> bool:
        return False
