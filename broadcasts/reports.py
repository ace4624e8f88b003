"""A broadcast's report (issue 21 item 4's reports, campaigns/reports.py): its messages' totals,
chart, links and CSV, and with variants the A/B comparison (difference and confidence) per
variant. Test sends are left out (they are transactional copies to the staging recipient, not
recipients' messages). Viewable by whoever may view broadcasts; mounted by BroadcastAdmin.get_urls."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseBase
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from broadcasts.models import AbMetric, Broadcast, BroadcastRecipient
from broadcasts.services import broadcast_messages
from campaigns.models import Message
from campaigns.report_views import BadReportParameter, ab_context, bucket_param, report_context, report_csv_response
from campaigns.reports import AbComparison, ab_compare, report_for, variant_from_report
from config.db_router import replica_reads


def _check(request: HttpRequest) -> None:
    if not request.user.has_perm("broadcasts.view_broadcast"):
        raise PermissionDenied


def variant_messages(broadcast: Broadcast, position: int) -> Any:
    return Message.objects.filter(pk__in=BroadcastRecipient.objects.filter(
        broadcast_id=broadcast.pk, variant=position, message__isnull=False).values("message_id"))


def broadcast_ab(broadcast: Broadcast) -> AbComparison | None:
    """Per variant, unique opens or clicks (the broadcast's metric) out of delivered: the reports'
    two-proportion comparison. None without variants. After the decision the winner's row counts
    the rest of the audience too; Broadcast.decision keeps the test's own numbers."""
    variants = list(broadcast.variants.order_by("position"))
    if len(variants) < 2:
        return None
    metric = "clicked_unique" if broadcast.ab_metric == AbMetric.CLICKS else "opened_unique"
    return ab_compare([variant_from_report(v.label, report_for(variant_messages(broadcast, v.position)),
                                           metric=metric) for v in variants])


@replica_reads  # read-only: the replica when there is one (config/db_router.py, issue 22)
def report_view(admin: Any, request: HttpRequest, pk: int) -> HttpResponse:
    _check(request)
    broadcast = get_object_or_404(Broadcast, pk=pk)
    try:
        bucket = bucket_param(request, default="hour")
    except BadReportParameter as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain")
    report = report_for(broadcast_messages(broadcast.pk), bucket=bucket)
    try:
        ab = broadcast_ab(broadcast)
    except ValueError as exc:  # counts ab_compare refuses: the rest of the report still shows
        ab = None
        messages.warning(request, f"The A/B comparison of {broadcast.key} could not be computed: {exc}")
    title = f"Broadcast {broadcast.key}"
    context = {**admin.admin_site.each_context(request), "opts": admin.model._meta, "broadcast": broadcast,
               "title": title, **report_context(report, title=title, csv_url=reverse(
                   "admin:broadcasts_broadcast_report_csv", args=[broadcast.pk])),
               **(ab_context(ab, metric="Unique clicks" if broadcast.ab_metric == AbMetric.CLICKS
                             else "Unique opens") if ab else {})}
    return TemplateResponse(request, "admin/broadcasts/broadcast/report.html", context)


@replica_reads  # the rows are streamed from the replica when there is one (issue 22)
def report_csv_view(admin: Any, request: HttpRequest, pk: int) -> HttpResponseBase:
    _check(request)
    broadcast = get_object_or_404(Broadcast, pk=pk)
    try:
        bucket = bucket_param(request, default="hour")
    except BadReportParameter as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain")
    report = report_for(broadcast_messages(broadcast.pk), bucket=bucket)
    return report_csv_response(report, filename=f"broadcast-{broadcast.key}", title=f"Broadcast {broadcast.key}")
