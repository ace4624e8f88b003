"""Sales lead views (read-only): the ranked list, its CSV export and one lead's score breakdown."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from typing import cast

from django.contrib import admin
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.utils import timezone
from django.views.decorators.http import require_safe

from config.db_router import replica_reads
from contacts.models import Contact
from core.utils import spreadsheet_safe
from core.views import staff_permission_required
from scoring.forms import LeadFilterForm
from scoring.selectors import RankedLeads, lead_score_breakdown, lead_timeline, leads_list

PER_PAGE = 50
EXPORT_FIELDS = ["score", "grade", "email", "first_name", "last_name", "company", "job_title", "country",
                 "lifecycle_stage", "owner", "mql_at"]

view_leads_required = staff_permission_required("scoring.view_leads")


@require_safe
@view_leads_required
@replica_reads  # read-only: the replica when there is one (issue 22)
def lead_list(request: HttpRequest) -> HttpResponse:
    params = request.GET.copy()
    if params.get("owner") == "me":  # "My leads" in the navigation: the same list, owned by whoever asks
        params["owner"] = str(request.user.pk)
    form = LeadFilterForm(params)
    leads = leads_list(filters=form.lead_filters())
    page = Paginator(leads, PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return TemplateResponse(request, "scoring/lead_list.html", {
        **admin.site.each_context(request), "title": "Leads", "form": form, "page": page,
        "rank_offset": page.start_index() - 1 if page.paginator.count else 0, "query": query.urlencode(),
    })


@require_safe
@view_leads_required
@replica_reads  # read-only: the replica when there is one (issue 22)
def lead_detail(request: HttpRequest, contact_id: int) -> HttpResponse:
    contact = get_object_or_404(Contact.objects.select_related("owner").with_scores(), pk=contact_id)
    breakdown = lead_score_breakdown(contact=contact)
    return TemplateResponse(request, "scoring/lead_detail.html", {
        **admin.site.each_context(request), "title": contact.full_name or contact.email, "lead": contact,
        "breakdown": breakdown, "breakdown_total": round(sum(row.effective for row in breakdown), 1),
        "events": lead_timeline(contact=contact),
    })


class _Echo:
    def write(self, value: str) -> str:
        return value


def _export_rows(leads: RankedLeads) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_FIELDS)
    for lead in leads.iterator(chunk_size=2000):
        values = [getattr(lead, name) for name in EXPORT_FIELDS]
        values[EXPORT_FIELDS.index("owner")] = lead.owner.get_username() if lead.owner else ""
        yield writer.writerow([spreadsheet_safe(v) for v in values])


def _lead_export(request: HttpRequest) -> StreamingHttpResponse:
    form = LeadFilterForm(request.GET)
    leads = leads_list(filters=form.lead_filters())
    response = StreamingHttpResponse(_export_rows(leads), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="leads-{timezone.now():%Y%m%d-%H%M}.csv"'
    return response


# staff_permission_required is typed for HttpResponse; a streaming response is fine to pass through.
# replica_reads: the rows are streamed from the replica when there is one (issue 22).
lead_export = require_safe(view_leads_required(cast(Callable[..., HttpResponse], replica_reads(_lead_export))))
