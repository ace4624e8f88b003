"""The operations page (Ops role): queues, delivery, CRM sync, failures, heartbeats, kill switches.
Every number links to the rows behind it."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from core import ops
from core.models import Incident, Switch
from core.services import switch_set
from core.views import staff_permission_required

CHART_WIDTH, CHART_HEIGHT = 600, 60


def _chart(per_minute: list[tuple[Any, int, int]]) -> dict[str, Any]:
    """Bars per minute for the last hour (sent, with failures stacked on top), as SVG rectangles."""
    if not per_minute:
        return {"bars": [], "width": CHART_WIDTH, "height": CHART_HEIGHT, "peak": 0}
    peak = max(s + f for _, s, f in per_minute) or 1
    step = CHART_WIDTH / 60
    first = per_minute[-1][0].timestamp() - 59 * 60
    bars = []
    for minute, sent, failed in per_minute:
        x = round((minute.timestamp() - first) / 60 * step, 1)
        sent_h = round(sent / peak * CHART_HEIGHT, 1)
        failed_h = round(failed / peak * CHART_HEIGHT, 1)
        bars.append({"x": x, "w": round(step - 1, 1), "sent_y": CHART_HEIGHT - sent_h, "sent_h": sent_h,
                     "failed_y": CHART_HEIGHT - sent_h - failed_h, "failed_h": failed_h,
                     "label": f"{minute:%H:%M}: {sent} sent, {failed} failed"})
    return {"bars": bars, "width": CHART_WIDTH, "height": CHART_HEIGHT, "peak": peak}


@staff_permission_required("core.view_operations")
def operations(request: HttpRequest) -> HttpResponse:
    delivery = ops.delivery_stats()
    context = {
        **admin.site.each_context(request),
        "title": "Operations",
        "queues": ops.queue_stats(),
        "workers": ops.workers_seen(),
        "delivery": delivery,
        "chart": _chart(delivery.per_minute),
        "crm": ops.crm_stats(),
        "failures": ops.failures(),
        "unprocessed_events": ops.unprocessed_events(),
        "heartbeats": sorted(ops.heartbeats().items()),
        "switches": [(name, label, ops.switches()[name]) for name, label in Switch.Name.choices],
        "can_switch": request.user.has_perm("core.change_switch"),
        "incidents": Incident.objects.filter(resolved_at__isnull=True).order_by("opened_at"),
    }
    return TemplateResponse(request, "admin/operations.html", context)


@require_POST
@staff_permission_required("core.view_operations")
def switch_toggle(request: HttpRequest, name: str) -> HttpResponse:
    if not request.user.has_perm("core.change_switch"):
        raise PermissionDenied
    if name not in Switch.Name.values:
        raise PermissionDenied
    paused = request.POST.get("paused") == "1"
    if switch_set(name=name, paused=paused, actor=request.user, reason=request.POST.get("reason", "")):
        messages.success(request, f"{Switch.Name(name).label}: {'paused' if paused else 'resumed'}.")
    return HttpResponseRedirect(reverse("operations"))
