from django.contrib import admin
from django.http import HttpRequest
from django.urls import URLPattern
from django_rq.models import Dashboard

from core.models import Heartbeat, Incident
from core.roles import QUEUES_PERMISSION
from core.rq_views import DashboardAdmin
from core.views import permission_guarded


class QueuesAdmin(DashboardAdmin):
    """django-rq's admin entry is its whole dashboard (changelist, queues, jobs, empty, delete),
    which django-rq opens to any staff user: here every view needs the queues permission (Ops)."""

    def get_urls(self) -> list[URLPattern]:
        return permission_guarded(super().get_urls(), QUEUES_PERMISSION)  # type: ignore[return-value]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(QUEUES_PERMISSION)

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return request.user.has_perm(QUEUES_PERMISSION)

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return request.user.has_perm(QUEUES_PERMISSION)


# django-rq registered its dashboard entry first (it is earlier in INSTALLED_APPS); ours 404s for
# queues, workers and rows that do not exist instead of 500s, and is Ops only.
if admin.site.is_registered(Dashboard):
    admin.site.unregister(Dashboard)
    admin.site.register(Dashboard, QueuesAdmin)


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
