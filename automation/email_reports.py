"""Reports for each workflow email (issue 21 item 4): a workflow's versions x send_email steps,
each with the template revision the version pins, and per email the report of its messages
(campaigns/reports.py) with chart, links and CSV. Viewable by whoever may view the outbox
(campaigns.view_message: Marketers, Approvers, Ops); mounted by WorkflowAdmin.get_urls.

A workflow email's messages are the workflow's (source "workflow:<key>") for that step and the
pinned revision, test and staging copies left out. Two versions that pin the same revision
with the same step send the same email, and share one report (the page names both).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseBase
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from automation.definition import iter_steps
from automation.models import TemplatePin, Workflow, WorkflowVersion
from campaigns.models import Message
from campaigns.report_views import BadReportParameter, bucket_param, report_context, report_csv_response
from campaigns.reports import report_for
from config.db_router import replica_reads


def _check(request: HttpRequest) -> None:
    if not request.user.has_perm("campaigns.view_message"):
        raise PermissionDenied


def workflow_emails(workflow: Workflow) -> list[dict[str, Any]]:
    """Every send_email step of every version but drafts (nothing was sent from those), newest first."""
    versions = list(workflow.versions.exclude(state="draft").order_by("-number"))
    pins = {(p.version_id, p.template.key): p.revision for p in
            TemplatePin.objects.filter(version__in=versions).select_related("template", "revision")}
    return [{"version": v, "step": str(step.get("id")), "template": str(step.get("template")),
             "revision": pins.get((v.pk, str(step.get("template"))))}
            for v in versions for step in iter_steps(v.definition or {}) if step.get("type") == "send_email"]


def workflow_email_messages(workflow: Workflow, revision_id: int, step_id: str) -> QuerySet[Message]:
    return Message.objects.filter(source=f"workflow:{workflow.key}"[:100], revision_id=revision_id,
                                  context__step=step_id, is_test=False)


def emails_view(admin: Any, request: HttpRequest, pk: int) -> HttpResponse:
    _check(request)
    workflow = get_object_or_404(Workflow, pk=pk)
    context = {**admin.admin_site.each_context(request), "opts": admin.model._meta, "workflow": workflow,
               "title": f"Email reports: {workflow}", "emails": workflow_emails(workflow)}
    return TemplateResponse(request, "admin/automation/workflow/emails.html", context)


def _email(pk: int, version_id: int, step: str) -> tuple[Workflow, WorkflowVersion, Any]:
    workflow = get_object_or_404(Workflow, pk=pk)
    version = get_object_or_404(WorkflowVersion, pk=version_id, workflow=workflow)
    for email in workflow_emails(workflow):
        if email["version"].pk == version.pk and email["step"] == step:
            if email["revision"] is None:
                raise Http404(f"v{version.number} pins no revision of template {email['template']!r}")
            return workflow, version, email
    raise Http404(f"v{version.number} has no send_email step {step[:100]!r}")


@replica_reads  # read-only: the replica when there is one (config/db_router.py, issue 22)
def email_report_view(admin: Any, request: HttpRequest, pk: int, version_id: int, step: str) -> HttpResponse:
    _check(request)
    workflow, version, email = _email(pk, version_id, step)
    try:
        bucket = bucket_param(request)
    except BadReportParameter as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain")
    revision = email["revision"]
    report = report_for(workflow_email_messages(workflow, revision.pk, step), bucket=bucket)
    shared = [e["version"] for e in workflow_emails(workflow)
              if e["step"] == step and e["revision"] == revision and e["version"].pk != version.pk]
    title = f"{workflow.key} v{version.number} step {step}: {revision}"
    context = {**admin.admin_site.each_context(request), "opts": admin.model._meta, "workflow": workflow,
               "version": version, "step": step, "revision": revision, "shared_with": shared, "title": title,
               **report_context(report, title=title, csv_url=reverse(
                   "admin:automation_workflow_email_report_csv", args=[workflow.pk, version.pk, step]))}
    return TemplateResponse(request, "admin/automation/workflow/email_report.html", context)


@replica_reads  # the rows are streamed from the replica when there is one (issue 22)
def email_report_csv_view(admin: Any, request: HttpRequest, pk: int, version_id: int,
                          step: str) -> HttpResponseBase:
    _check(request)
    workflow, version, email = _email(pk, version_id, step)
    try:
        bucket = bucket_param(request)
    except BadReportParameter as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain")
    report = report_for(workflow_email_messages(workflow, email["revision"].pk, step), bucket=bucket)
    title = f"{workflow.key} v{version.number} step {step}: {email['revision']}"
    return report_csv_response(report, title=title, filename=f"{workflow.key}-v{version.number}-{step}")
