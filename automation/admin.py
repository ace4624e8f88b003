"""Workflow admin: the versioning screen (versions, staging vs production diff and graphs,
validation, simulation, promote/rollback with a migration preview, dashboard) and an import form.
Views check access, call one service and report with message_user."""

from __future__ import annotations

from functools import partial
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.safestring import mark_safe

from automation import dependencies, editor, email_reports, selectors, services
from automation.capacity import capacity_check
from automation.definition import STEP_KEYS, DefinitionError
from automation.definition import template_keys as definition_template_keys
from automation.models import Enrollment, StepRun, VersionState, WebhookDelivery, Workflow, WorkflowVersion
from core.admin_utils import ReadOnlyAdmin
from core.audit import audit_record

SIMULATE_MAX_CONTACTS = 50  # the versions screen's random field offers up to 50
CONFIRMED = ("promote", "rollback", "pause")  # actions that show what changes and ask first


class ImportForm(forms.Form):
    file = forms.FileField(required=False, help_text="A YAML or JSON workflow file")
    text = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 16, "cols": 100}),
                           help_text="...or paste the file here")
    to = forms.ChoiceField(choices=[("draft", "New drafts"), ("staging", "Straight to staging")], initial="draft",
                           required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        upload = data.get("file")
        limit = settings.WORKFLOW_FILE_MAX_BYTES
        if upload and upload.size > limit:  # refused unread (the upload may be far larger than memory allows)
            raise forms.ValidationError(
                f"The file is {upload.size:,} bytes; at most {limit:,} (WORKFLOW_FILE_MAX_BYTES).")
        try:
            data["content"] = upload.read().decode("utf-8") if upload else data.get("text", "")
        except UnicodeDecodeError as exc:
            raise forms.ValidationError(f"The file is not UTF-8 text (byte {exc.start}).") from None
        if not data["content"].strip():
            raise forms.ValidationError("Choose a file or paste one.")
        return data


class SimulateForm(forms.Form):
    """The versions screen's simulation query: bounded here, since each contact is a walk through the
    workflow with its own queries (random=100000 kept a core busy for 5 minutes)."""

    random = forms.IntegerField(required=False, min_value=0, max_value=SIMULATE_MAX_CONTACTS,
                                error_messages={"max_value": f"at most {SIMULATE_MAX_CONTACTS} random contacts",
                                                "min_value": "a number of random contacts from 0",
                                                "invalid": "a whole number of random contacts"})
    contacts = forms.CharField(required=False, max_length=SIMULATE_MAX_CONTACTS * 255)

    def clean_contacts(self) -> list[str]:
        emails = [e.strip() for e in self.cleaned_data.get("contacts", "").split(",") if e.strip()]
        if len(emails) > SIMULATE_MAX_CONTACTS:
            raise forms.ValidationError(f"at most {SIMULATE_MAX_CONTACTS} contacts by email")
        return emails


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "paused", "production", "staging", "updated_at"]
    search_fields = ["key", "name"]
    fields = ["key", "name", "test_segment", "timezone", "paused", "auto_rollback"]
    readonly_fields = ["key", "name", "timezone", "paused"]  # definitions change through versions
    change_form_template = "admin/automation/workflow/change_form.html"
    change_list_template = "admin/automation/workflow/change_list.html"

    @admin.display(description="Production")
    def production(self, obj: Workflow) -> str:
        v = obj.versions.filter(state=VersionState.PRODUCTION).first()
        return f"v{v.number}" if v else "—"

    @admin.display(description="Staging")
    def staging(self, obj: Workflow) -> str:
        v = obj.versions.filter(state=VersionState.STAGING).first()
        return f"v{v.number}" if v else "—"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # workflows arrive by import (file or pasted), so they always have a version

    def save_model(self, request: HttpRequest, obj: Workflow, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if "auto_rollback" in form.changed_data:  # who opted a workflow in or out of rolling back by itself
            audit_record(actor=request.user, action="workflow.auto_rollback_" + ("on" if obj.auto_rollback else "off"),
                         target=obj)

    def get_urls(self) -> list[URLPattern]:
        def view(route: str, func: Any, name: str) -> URLPattern:
            return path(route, self.admin_site.admin_view(func), name=f"automation_workflow_{name}")

        return [
            view("import/", self.import_view, "import"),
            view("<int:pk>/versions/", self.versions_view, "versions"),
            view("<int:pk>/act/", self.act_view, "act"),
            view("<int:pk>/export/", self.export_view, "export"),
            view("<int:pk>/edit/", self.edit_view, "edit"),
            view("<int:pk>/dependencies/", self.version_dependencies_view, "version_dependencies"),
            view("dependencies/", self.system_dependencies_view, "dependencies"),
            # Email reports (issue 21 item 4): automation/email_reports.py checks campaigns.view_message.
            view("<int:pk>/emails/", partial(email_reports.emails_view, self), "emails"),
            view("<int:pk>/emails/<int:version_id>/<str:step>/", partial(email_reports.email_report_view, self),
                 "email_report"),
            view("<int:pk>/emails/<int:version_id>/<str:step>/csv/",
                 partial(email_reports.email_report_csv_view, self), "email_report_csv"),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {**(extra_context or {}),  # a non-numeric id: no link; the admin answers "does not exist"
                 **({"versions_url": reverse("admin:automation_workflow_versions", args=[object_id])}
                    if object_id.isdigit() else {})}
        return super().change_view(request, object_id, form_url, extra)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_change_permission(request) or not request.user.has_perm("automation.add_workflowversion"):
            raise PermissionDenied
        form = ImportForm(request.POST or None, request.FILES or None)
        errors: list[str] = []
        if request.method == "POST" and form.is_valid():
            try:
                result = services.workflow_import(text=form.cleaned_data["content"], actor=request.user,
                                                  to=form.cleaned_data.get("to") or "draft")
            except (ValidationError, DefinitionError) as exc:
                errors = exc.messages if isinstance(exc, ValidationError) else [str(exc)]
            else:
                done = [str(v) for v in result.versions] or ["nothing new"]
                self.message_user(request, f"Imported: {', '.join(done)}", messages.SUCCESS)
                first = (result.versions or result.unchanged)
                target = reverse("admin:automation_workflow_versions", args=[first[0].workflow_id]) if first else \
                    reverse("admin:automation_workflow_changelist")
                return HttpResponseRedirect(target)
        return TemplateResponse(request, "admin/automation/workflow/import.html", {
            **self.admin_site.each_context(request), "form": form, "errors": errors, "opts": self.model._meta,
            "title": "Import workflows"})

    def versions_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        workflow = get_object_or_404(Workflow, pk=pk)
        if not self.has_view_permission(request, workflow):
            raise PermissionDenied
        versions = list(workflow.versions.select_related("author", "promoted_by").order_by("-number"))
        staging = next((v for v in versions if v.state == VersionState.STAGING), None)
        production = next((v for v in versions if v.state == VersionState.PRODUCTION), None)
        sim_version = next((v for v in versions if str(v.pk) == request.GET.get("simulate")), None)
        simulations = []
        if sim_version is not None:
            sim_form = SimulateForm(request.GET)
            if sim_form.is_valid():
                contacts = selectors.simulation_contacts(emails=sim_form.cleaned_data["contacts"],
                                                         random_count=sim_form.cleaned_data["random"] or 0)
                simulations = selectors.simulate(version=sim_version, contacts=contacts)
            else:
                for field, problems in sim_form.errors.items():
                    self.message_user(request, f"Simulation not run: {field}: {'; '.join(str(p) for p in problems)}",
                                      messages.ERROR)
        rollback_to = services.rollback_target(workflow=workflow)
        user = request.user
        # What the screen compares: what promoting staging would change; with no staging, the last
        # promotion (production against the version it replaced).
        before, after = (production, staging) if staging or not production else (production.replaced, production)
        newest = versions[0] if versions else None
        return TemplateResponse(request, "admin/automation/workflow/versions.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta, "original": workflow,
            "title": f"Versions of {workflow.name}", "workflow": workflow, "versions": versions,
            "staging": staging, "production": production, "compare_old": before, "compare_new": after,
            "diff": selectors.step_diff(before, after),
            "template_diff": selectors.template_diff(before, after),
            "workflow_diff": selectors.workflow_level_diff(before, after),
            "newer_templates": services.templates_newer_than_pinned(version=newest), "newest": newest,
            "rollback_templates": selectors.template_diff(production, rollback_to) if rollback_to else [],
            "staging_svg": mark_safe(selectors.graph_svg(staging)),  # noqa: S308  built with escape()
            "production_svg": mark_safe(selectors.graph_svg(production)),  # noqa: S308
            "issues": {v.number: services.version_issues(version=v) for v in (staging, production) if v},
            "preview": services.migration_preview(source=production, target=staging) if staging else None,
            "rollback_preview": services.migration_preview(source=production, target=rollback_to)
            if rollback_to else None,
            "rollback_to": rollback_to, "sim_version": sim_version, "simulations": simulations,
            "can_change": self.has_change_permission(request, workflow),
            "can_promote": user.has_perm("automation.promote_workflow"),
            "promote_blocked": services.can_promote(actor=user, version=staging) if staging else "",
            "dashboard": selectors.workflow_dashboard(workflow=workflow),
            "dependency_maps": [_dependency_map(v) for v in (staging, production) if v],
        })

    def act_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        workflow = get_object_or_404(Workflow, pk=pk)
        back = HttpResponseRedirect(reverse("admin:automation_workflow_versions", args=[pk]))
        if request.method != "POST" or not self.has_change_permission(request, workflow):
            raise PermissionDenied
        action, migrate = request.POST.get("action", ""), request.POST.get("migrate") == "1"
        if action in CONFIRMED and request.POST.get("confirm") != "1":
            return self._confirm_view(request, workflow, action, migrate)
        try:
            if action == "stage":
                version = get_object_or_404(WorkflowVersion, pk=_version_pk(request.POST), workflow=workflow)
                services.workflow_stage(version=version, actor=request.user)
            elif action == "promote":
                services.workflow_promote(workflow=workflow, actor=request.user, migrate=migrate,
                                          acknowledge_capacity=request.POST.get("acknowledge_capacity") == "1")
            elif action == "rollback":
                services.workflow_rollback(workflow=workflow, actor=request.user, migrate=migrate)
            elif action in ("pause", "resume"):
                services.workflow_set_paused(workflow=workflow, paused=action == "pause", actor=request.user)
            elif action == "enroll":
                self._enroll(request, workflow)
                return back
            elif action == "draft_latest":
                version = services.version_draft_with_latest_templates(workflow=workflow, actor=request.user)
                self.message_user(request, f"Draft v{version.number} pins the templates' current content; "
                                  "stage it to test, then an approver promotes it.", messages.SUCCESS)
                return back
            else:
                raise ValidationError(f"unknown action {action!r}")
        except PermissionDenied as exc:
            self.message_user(request, str(exc) or "Not allowed.", messages.ERROR)
            return back
        except ValidationError as exc:
            self.message_user(request, "; ".join(exc.messages), messages.ERROR)
            return back
        self.message_user(request, f"{action.title()}: done.", messages.SUCCESS)
        return back

    def _enroll(self, request: HttpRequest, workflow: Workflow) -> None:
        emails = [e.strip() for e in request.POST.get("emails", "").replace("\n", ",").split(",") if e.strip()]
        if not emails:
            raise ValidationError("enter one or more contact emails")
        result = services.workflow_enroll_emails(workflow=workflow, emails=emails, actor=request.user,
                                                 to=request.POST.get("to", ""))
        self.message_user(request, f"Enrolled into {request.POST.get('to')}: {', '.join(result.enrolled) or 'nobody'}.",
                          messages.SUCCESS if result.enrolled else messages.WARNING)
        for label, found in (("No contact with this email", result.unknown),
                             ("Not test contacts (staging takes the test audience only)", result.not_test),
                             ("Already in the workflow, or re-entry does not allow it", result.skipped)):
            if found:
                self.message_user(request, f"{label}: {', '.join(found)}", messages.WARNING)

    def _confirm_view(self, request: HttpRequest, workflow: Workflow, action: str, migrate: bool) -> HttpResponse:
        """Promote, rollback and pause ask first: what changes (steps and the content sent) and
        how many contacts are in flight. Nothing happens until the confirming POST."""
        production = workflow.versions.filter(state=VersionState.PRODUCTION).first()
        target = None
        if action == "promote":
            target = workflow.versions.filter(state=VersionState.STAGING).first()
        elif action == "rollback":
            target = services.rollback_target(workflow=workflow)
        if action in ("promote", "rollback") and target is None:
            self.message_user(request, f"Nothing to {action}.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:automation_workflow_versions", args=[workflow.pk]))
        return TemplateResponse(request, "admin/automation/workflow/confirm.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta, "original": workflow,
            "title": f"Confirm: {action} {workflow.name}", "workflow": workflow, "action": action,
            "migrate": migrate, "production": production, "target": target,
            "diff": selectors.step_diff(production, target) if target else [],
            "template_diff": selectors.template_diff(production, target) if target else [],
            "in_flight": selectors.in_flight(workflow=workflow),
            "preview": services.migration_preview(source=production, target=target) if target else None,
            "blocked": services.can_promote(actor=request.user, version=target) if target else "",
            "capacity": capacity_check(version=target) if action == "promote" and target else None,
        })

    def version_dependencies_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """One version's dependency map as JSON (the versioning screen links it per version)."""
        workflow = get_object_or_404(Workflow, pk=pk)
        if not self.has_view_permission(request, workflow):
            raise PermissionDenied
        version = get_object_or_404(WorkflowVersion, pk=_version_pk(request.GET), workflow=workflow)
        response = JsonResponse(dependencies.version_dependencies_json(version=version),
                                json_dumps_params={"indent": 2})
        response["Content-Disposition"] = f'attachment; filename="{workflow.key}-v{version.number}-dependencies.json"'
        return response

    def system_dependencies_view(self, request: HttpRequest) -> HttpResponse:
        """Every staging and production version and what it depends on: a graph, a table, JSON."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        data = dependencies.system_dependencies()
        if request.GET.get("format") == "json":
            response = JsonResponse(data, json_dumps_params={"indent": 2})
            response["Content-Disposition"] = 'attachment; filename="leadflow-dependencies.json"'
            return response
        return TemplateResponse(request, "admin/automation/workflow/dependencies.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta, "title": "Workflow dependencies",
            "data": data, "svg": mark_safe(dependencies.system_graph_svg(data)),  # noqa: S308  built with escape()
        })

    def edit_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The draft editor: steps as forms (add, remove, move, edit), workflow fields, the content of
        the templates the draft sends, the graph and every validation issue by step id. A non-draft
        is shown with a button that makes a new draft of it."""
        workflow = get_object_or_404(Workflow, pk=pk)
        user = request.user
        may_edit = self.has_change_permission(request, workflow) and user.has_perm("automation.add_workflowversion")
        if not self.has_view_permission(request, workflow) or (request.method == "POST" and not may_edit):
            raise PermissionDenied
        version = get_object_or_404(WorkflowVersion, pk=_version_pk(request.GET), workflow=workflow)
        here = f"{reverse('admin:automation_workflow_edit', args=[pk])}?version={{}}"
        definition = version.definition
        problems: list[str] = []
        template_errors: dict[str, list[str]] = {}
        if request.method == "POST":
            op = request.POST.get("op", "save")
            if op == "add":  # the type comes from the select next to the button
                op = f"add:{request.POST.get('add-type', '')}"
            try:
                if op == "new_draft":
                    draft = services.version_draft_edit(version=version, actor=user)
                    self.message_user(request, f"Draft v{draft.number} made from v{version.number}.", messages.SUCCESS)
                    return HttpResponseRedirect(here.format(draft.pk))
                if op == "template":
                    key = request.POST.get("template", "")
                    try:
                        revision = services.version_draft_template_save(
                            version=version, key=key, actor=user,
                            fields={n: request.POST.get(f"t-{n}", "") for n in ("subject", "html", "text")})
                    except ValidationError as exc:
                        template_errors[key] = exc.messages
                    else:
                        self.message_user(request, f"Saved {revision}; v{version.number} now sends it.",
                                          messages.SUCCESS)
                        return HttpResponseRedirect(here.format(version.pk))
                else:
                    definition, problems = editor.definition_from_post(request.POST, key=workflow.key)
                    definition = editor.apply_op(definition, op)
                    if not problems:
                        issues = services.version_draft_update(version=version, definition=definition, actor=user)
                        self.message_user(request, f"Saved v{version.number}" + (
                            f" with {len(issues)} problem(s) to fix before staging." if issues else "; it validates."),
                            messages.WARNING if issues else messages.SUCCESS)
                        return HttpResponseRedirect(here.format(version.pk))
            except ValidationError as exc:
                problems = exc.messages
        return self._editor_page(request, workflow, version, definition, problems, template_errors, may_edit)

    def _editor_page(self, request: HttpRequest, workflow: Workflow, version: WorkflowVersion,
                     definition: dict[str, Any], problems: list[str], template_errors: dict[str, list[str]],
                     may_edit: bool) -> HttpResponse:
        from campaigns.models import EmailTemplate

        forms_ = editor.step_forms(definition)
        issues = d_validate(definition)
        general = editor.errors_by_step(issues, forms_)
        pins = services.version_pins(version=version)
        templates = [{"key": t.key, "revision": pins.get(t.key), "errors": template_errors.get(t.key, []),
                      "content": pins.get(t.key) or t}
                     for t in EmailTemplate.objects.filter(key__in=sorted(definition_template_keys(definition)))]
        return TemplateResponse(request, "admin/automation/workflow/edit.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta, "original": workflow,
            "title": f"Edit {workflow.name} v{version.number}", "workflow": workflow, "version": version,
            "is_draft": version.state == VersionState.DRAFT, "may_edit": may_edit, "step_forms": forms_,
            "workflow_fields": editor.workflow_fields(definition), "problems": problems, "general_issues": general,
            "issue_count": len(issues), "step_types": list(STEP_KEYS), "templates": templates,
            "graph_svg": mark_safe(selectors.graph_svg(version)),  # noqa: S308  built with escape()
        })

    def export_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        workflow = get_object_or_404(Workflow, pk=pk)
        if not self.has_view_permission(request, workflow):
            raise PermissionDenied
        version = get_object_or_404(WorkflowVersion, pk=_version_pk(request.GET), workflow=workflow)
        text = services.version_export(version=version)
        response = HttpResponse(text, content_type="text/yaml; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{workflow.key}-v{version.number}.yaml"'
        return response


def _dependency_map(version: WorkflowVersion) -> dict[str, Any]:
    deps = dependencies.version_dependencies(version=version)
    return {"version": version, "deps": deps,
            "svg": mark_safe(dependencies.version_graph_svg(version=version, deps=deps))}  # noqa: S308  escaped


def d_validate(definition: dict[str, Any]) -> list[Any]:
    from automation.definition import validate_workflow

    return validate_workflow(definition, known_templates=services.known_template_keys())


def _version_pk(params: Any) -> int:
    """The `version` parameter as a primary key; anything else (missing, "abc", "1.5") is a 404
    rather than the ValueError a lookup on it raises."""
    raw = params.get("version", "")
    if not raw.isdigit() or len(raw) > 18:  # past 64 bits it cannot be an id
        raise Http404("no such version")
    return int(raw)


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(ReadOnlyAdmin):
    list_display = ["workflow", "number", "state", "author", "created_at", "promoted_by", "promoted_at"]
    list_filter = ["state"]
    list_select_related = ["workflow", "author", "promoted_by"]


@admin.register(Enrollment)
class EnrollmentAdmin(ReadOnlyAdmin):
    list_display = ["id", "contact", "workflow", "version", "status", "step_id", "is_staging", "next_run_at",
                    "entered_at"]
    list_filter = ["status", "is_staging", "workflow"]
    list_select_related = ["contact", "workflow", "version"]
    raw_id_fields = ["contact", "trigger_event"]
    search_fields = ["=id", "=correlation_id", "=contact__email"]  # exact: "follow this id" from an event


@admin.register(StepRun)
class StepRunAdmin(ReadOnlyAdmin):
    list_display = ["idempotency_key", "contact", "workflow", "step_id", "step_type", "status", "attempt",
                    "started_at", "finished_at", "error"]
    list_filter = ["status", "step_type"]
    # One query for the page, not three per row (contact and workflow through the enrollment).
    list_select_related = ["enrollment__contact", "enrollment__workflow", "version"]

    @admin.display(description="Contact", ordering="enrollment__contact__email")
    def contact(self, obj: StepRun) -> str:
        return str(obj.enrollment.contact.email)

    @admin.display(description="Workflow", ordering="enrollment__workflow__key")
    def workflow(self, obj: StepRun) -> str:
        return f"{obj.enrollment.workflow.key} v{obj.version.number}"
    search_fields = ["=idempotency_key", "=correlation_id"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "channel", "target", "status", "attempts", "last_error", "created_at", "sent_at"]
    list_filter = ["status", "channel"]
    actions = ["retry"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm("automation.change_webhookdelivery"))

    @admin.action(description="Retry now", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        from django.utils import timezone

        count = queryset.filter(status=WebhookDelivery.Status.FAILED).update(
            status=WebhookDelivery.Status.PENDING, next_attempt_at=timezone.now(), attempts=0)
        self.message_user(request, f"{count} deliveries queued again (the next tick sends them).")
