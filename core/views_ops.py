"""The operations page (Ops role): queues, delivery, CRM sync, failures, heartbeats, kill switches.
Every number links to the rows behind it. With Redis down it still answers: the queue figures give
way to a "Redis unreachable" banner, everything read from the database shows as usual."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from config.db_router import replica_reads
from core import ops
from core.models import AuditEntry, Incident, Switch
from core.services import switch_set
from core.views import staff_permission_required

CHART_WIDTH, CHART_HEIGHT = 600, 60
QUEUE_CHART_HEIGHT = 30  # one small chart per queue


def _chart(per_minute: list[tuple[Any, int, int]], *, end: dt.datetime | None = None,
           ok: str = "sent", height: int = CHART_HEIGHT) -> dict[str, Any]:
    """Bars per minute for the hour ending at `end`'s minute (default: the last bar's), `ok` counts
    with failures stacked on top, as SVG rectangles. Empty minutes draw nothing."""
    rows = [row for row in per_minute if row[1] or row[2]]
    if not rows:
        return {"bars": [], "width": CHART_WIDTH, "height": height, "peak": 0}
    last = (end.replace(second=0, microsecond=0) if end is not None else rows[-1][0]).timestamp()
    first = last - 59 * 60
    rows = [row for row in rows if first <= row[0].timestamp() <= last]
    peak = max((s + f for _, s, f in rows), default=0)
    step = CHART_WIDTH / 60
    bars = []
    for minute, sent, failed in rows:
        x = round((minute.timestamp() - first) / 60 * step, 1)
        sent_h = round(sent / peak * height, 1)
        failed_h = round(failed / peak * height, 1)
        bars.append({"x": x, "w": round(step - 1, 1), "sent_y": round(height - sent_h, 1), "sent_h": sent_h,
                     "failed_y": round(height - sent_h - failed_h, 1), "failed_h": failed_h,
                     "label": f"{timezone.localtime(minute):%H:%M}: {sent} {ok}, {failed} failed"})
    return {"bars": bars, "width": CHART_WIDTH, "height": height, "peak": peak}


def _step_runs_link(jump: ops.WorkflowJump) -> str:
    """The step runs admin: this workflow's failed and retrying runs (filtered by its versions, a
    one-relation lookup the admin allows without a list filter)."""
    query = urlencode({"status__in": "failed,retrying", "version__in": ",".join(map(str, jump.version_ids))},
                      safe=",")
    return f"{reverse('admin:automation_steprun_changelist')}?{query}"


@replica_reads
def _history(now: dt.datetime) -> tuple[ops.DeliveryStats, dict[str, Any], dict[str, int], list[ops.WorkflowJump],
                                        list[ops.SenderRate]]:
    """The page's history (counts over the last hour and days): from the replica when there is one, a
    few seconds behind at most. What is true now (switches, incidents, paused senders, failed lists,
    heartbeats) stays on the primary, so a page shown after a change shows it (issue 22)."""
    return (ops.delivery_stats(now), ops.crm_stats(now), ops.failures(now), ops.workflow_failure_jumps(now),
            ops.sender_rates(now))


@staff_permission_required("core.view_operations")
def operations(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    delivery, crm, failures, jumps, rates = _history(now)
    failed_segments, failed_segments_shown = ops.failed_segments()
    paused = ops.switches()
    redis = ops.redis_snapshot(now)  # without Redis: its error in a banner, the rest of the page as usual
    context = {
        **admin.site.each_context(request),
        "title": "Operations",
        "redis_error": redis.error,
        "queues": redis.queues,
        "workers": redis.workers,
        "throughput": [(t, _chart(t.per_minute, end=now, ok="finished", height=QUEUE_CHART_HEIGHT))
                       for t in redis.throughput],
        "delivery": delivery,
        "chart": _chart(delivery.per_minute, end=now),
        "crm": crm,
        "failures": failures,
        "workflow_jumps": [(jump, _step_runs_link(jump)) for jump in jumps],
        "jump_rule": {"min_failures": ops.JUMP_MIN_FAILURES, "min_rate": ops.JUMP_MIN_RATE,
                      "factor": ops.JUMP_FACTOR},
        "failed_segments": failed_segments,
        "failed_segments_shown": failed_segments_shown,
        "failed_imports": ops.failed_imports(now),
        "unprocessed_events": ops.unprocessed_events(),
        "heartbeats": sorted(ops.heartbeats().items()),
        "switches": [(name, label, paused[name]) for name, label in Switch.Name.choices],
        "can_switch": request.user.has_perm("core.change_switch"),
        "incidents": Incident.objects.filter(resolved_at__isnull=True).order_by("opened_at"),
        **_reputation_context(request, rates),
    }
    return TemplateResponse(request, "admin/operations.html", context)


def _reputation_context(request: HttpRequest, rates: list[ops.SenderRate]) -> dict[str, Any]:
    """Complaint and hard-bounce rates per sender and day, and the paused senders (who paused each)."""
    from campaigns.models import SenderProfile
    from campaigns.reputation import AUTO_PAUSE_ACTION

    paused = list(SenderProfile.objects.filter(is_paused=True).order_by("name").only("pk", "name"))
    why: dict[str, Any] = {}
    for entry in AuditEntry.objects.filter(action=AUTO_PAUSE_ACTION, target_type="campaigns.senderprofile",
                                           target_id__in=[str(s.pk) for s in paused]).order_by("-id")[:100]:
        why.setdefault(entry.target_id, entry)
    return {
        "sender_rates": rates,
        "rate_lines": {"warn": f"{settings.COMPLAINT_RATE_WARN:.2%}",
                       "incident": f"{settings.COMPLAINT_RATE_INCIDENT:.2%}",
                       "bounce": f"{settings.HARD_BOUNCE_RATE_INCIDENT:.2%}", "min_sent": settings.SENDER_RATE_MIN_SENT,
                       "auto_pause": settings.SENDER_AUTO_PAUSE_ON_COMPLAINTS},
        "paused_senders": [(sender, why.get(str(sender.pk))) for sender in paused],
        "can_resume_senders": request.user.has_perm("campaigns.change_senderprofile"),
    }


@require_POST
@staff_permission_required("core.view_operations")
def sender_resume(request: HttpRequest, pk: int) -> HttpResponse:
    from campaigns.models import SenderProfile
    from campaigns.reputation import sender_resume as resume

    if not request.user.has_perm("campaigns.change_senderprofile"):
        raise PermissionDenied
    sender = SenderProfile.objects.filter(pk=pk).first()
    if sender is None:
        raise Http404("no such sender profile")
    if resume(sender=sender, actor=request.user):
        messages.success(request, f"Sender {sender.name}: resumed; its queue is being delivered.")
    return HttpResponseRedirect(reverse("operations"))


@require_POST
@staff_permission_required("core.view_operations")
def switch_toggle(request: HttpRequest, name: str) -> HttpResponse:
    if not request.user.has_perm("core.change_switch"):
        raise PermissionDenied
    if name not in Switch.Name.values:
        raise PermissionDenied
    paused = request.POST.get("paused") == "1"
    reason = request.POST.get("reason", "").strip()
    if not reason:  # a kill switch stops (or restarts) work for everyone: the audit says why
        messages.error(request, f"{Switch.Name(name).label}: not {'paused' if paused else 'resumed'}; "
                       "give a reason (it is kept in the audit log).")
        return HttpResponseRedirect(reverse("operations"))
    if switch_set(name=name, paused=paused, actor=request.user, reason=reason):
        messages.success(request, f"{Switch.Name(name).label}: {'paused' if paused else 'resumed'}.")
    return HttpResponseRedirect(reverse("operations"))
