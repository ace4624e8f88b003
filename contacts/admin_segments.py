"""Admin for segments (imported by contacts/admin.py): the definition built by clicking (the
server-rendered builder, contacts/builder.py) or typed as JSON, validated with every problem named
by its path, a live count and sample as it changes, "Refresh now"."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from config.db_router import replica_reads
from contacts.builder import SEGMENT_TARGETS, BuilderWidget, LazyOptions, builder_view
from contacts.models import Segment
from contacts.segments.compiler import validate_filter
from contacts.segments.services import segment_enqueue_refresh, segment_preview, segment_save
from core.dependents import DependentsWarningMixin

EXAMPLE = {"all": [{"field": "lifecycle_stage", "op": "eq", "value": "lead"},
                   {"event": "page_view", "min_count": 3, "within_days": 30}]}


class DefinitionField(forms.JSONField):
    """Pretty-printed JSON in a monospace textarea (the stored form is compact)."""

    def to_python(self, value: Any) -> Any:
        try:
            return super().to_python(value)
        except RecursionError:  # thousands of nested brackets: Django catches only JSONDecodeError
            raise forms.ValidationError("Enter a valid JSON (nested too deeply).", code="invalid") from None

    def bound_data(self, data: Any, initial: Any) -> Any:
        try:
            return super().bound_data(data, initial)
        except RecursionError:  # redisplaying the refused text
            return forms.fields.InvalidJSONInput(data)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


class SegmentForm(forms.ModelForm):
    definition = DefinitionField(
        initial={"all": []},
        widget=forms.Textarea(attrs={"rows": 18, "cols": 90, "spellcheck": "false",
                                     "style": "font-family: monospace; width: 60em;"}),
        help_text="A filter tree in JSON (docs/segments.md), e.g. " + json.dumps(EXAMPLE),
    )

    class Meta:
        model = Segment
        fields = ["name", "description", "definition", "is_active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "definition" in self.fields:  # not for a viewer, who sees it read-only
            self.fields["definition"].widget = BuilderWidget(
                target=SEGMENT_TARGETS["definition"], endpoint=reverse("admin:contacts_segment_builder"),
                options=LazyOptions(exclude_segment=self.instance.pk), segment_id=self.instance.pk)

    def clean_definition(self) -> Any:
        tree = self.cleaned_data["definition"]
        errors = validate_filter(tree, segment_id=self.instance.pk)
        if errors:
            raise forms.ValidationError(errors)
        return tree


class RefreshFailedFilter(admin.SimpleListFilter):
    """Segments whose last full refresh failed (the operations page lists the active ones)."""

    title = "refresh failed"
    parameter_name = "refresh_failed"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Segment]) -> QuerySet[Segment]:
        if self.value() in ("yes", "no"):
            return queryset.filter(refresh_failed_at__isnull=self.value() == "no")
        return queryset


@admin.register(Segment)
class SegmentAdmin(DependentsWarningMixin, admin.ModelAdmin):
    form = SegmentForm
    list_display = ["name", "is_active", "member_count", "refreshed_at", "refresh_failed_at", "updated_at"]
    list_filter = ["is_active", RefreshFailedFilter]
    search_fields = ["name", "description"]
    readonly_fields = ["member_count", "refreshed_at", "refresh_failed_at", "refresh_error", "created_at", "updated_at"]
    # The definition is built by point and click (contacts/builder.py, htmx); its JSON stays
    # editable, folded away under the builder as the advanced view.
    fieldsets = [
        (None, {"fields": ["name", "description", "is_active"]}),
        ("Who is in this segment", {"fields": ["definition"],
                                    "description": "Build it by clicking; the JSON it writes is folded under "
                                                   "the builder (docs/segments.md)."}),
        ("Membership", {"fields": ["member_count", "refreshed_at", "created_at", "updated_at"]}),
    ]
    # Shown first, and only while the last full refresh stands failed: the operations page links here
    # (recorded by the segment jobs, cleared by the next refresh that succeeds).
    failure_fieldset = ("Last refresh failed", {"fields": ["refresh_failed_at", "refresh_error"],
                                                "description": "Members are as of the last good refresh until "
                                                               "one succeeds; fix the cause, then Refresh now."})
    actions = ["refresh_now"]
    show_full_result_count = False
    change_form_template = "admin/contacts/segment/change_form.html"

    def get_fieldsets(self, request: HttpRequest, obj: Segment | None = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and obj.refresh_failed_at is not None:
            return [self.failure_fieldset, *fieldsets]
        return fieldsets

    def get_urls(self) -> list[URLPattern]:
        preview = path("preview/", self.admin_site.admin_view(self.preview_view), name="contacts_segment_preview")
        builder = path("builder/", self.admin_site.admin_view(self.builder_view), name="contacts_segment_builder")
        return [preview, builder, *super().get_urls()]

    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = dict(extra_context or {})
        if self._can_edit(request):
            extra["preview_url"] = reverse("admin:contacts_segment_preview")
            segment_id = object_id if object_id and object_id.isascii() and object_id.isdigit() else ""
            extra["preview_vals"] = json.dumps({"segment_id": segment_id})
        return super().changeform_view(request, object_id, form_url, extra)

    def save_model(self, request: HttpRequest, obj: Segment, form: forms.Form, change: bool) -> None:
        segment_save(segment=obj)  # the refresh is queued and runs after the commit

    def response_post_save_change(self, request: HttpRequest, obj: Segment) -> HttpResponseRedirect:
        self.message_user(request, "Membership is being refreshed; the count updates in a moment.", messages.INFO)
        return super().response_post_save_change(request, obj)

    @admin.action(description="Refresh now", permissions=["change"])
    def refresh_now(self, request: HttpRequest, queryset: QuerySet[Segment]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        for segment_id in ids:
            segment_enqueue_refresh(segment_id=segment_id)
        self.message_user(request, f"Refresh queued for {len(ids)} segment(s).", messages.SUCCESS)

    def preview_view(self, request: HttpRequest) -> HttpResponse:
        """POST definition (raw JSON text) and optional segment_id: {count, sample, errors}, as
        JSON, or as the live preview's HTML for the admin page's htmx request."""
        if not self._can_edit(request):
            raise PermissionDenied
        return _preview(request)

    def builder_view(self, request: HttpRequest) -> HttpResponse:
        """One edit of the definition's builder (contacts/builder.py); who may edit segments."""
        if not self._can_edit(request):
            raise PermissionDenied
        return builder_view(request, targets=SEGMENT_TARGETS, endpoint=reverse("admin:contacts_segment_builder"))

    def _can_edit(self, request: HttpRequest) -> bool:
        return self.has_add_permission(request) or self.has_change_permission(request)


@require_POST
@replica_reads  # a count and a sample, written nowhere: the replica when there is one (issue 22)
def _preview(request: HttpRequest) -> HttpResponse:
    raw_id = request.POST.get("segment_id", "")
    # isascii: "²".isdigit() is true but int() refuses it (a 500); length: no 10,000-digit ids.
    segment_id = int(raw_id) if raw_id.isascii() and raw_id.isdigit() and len(raw_id) < 19 else None
    answer = segment_preview(definition_text=request.POST.get("definition", ""), segment_id=segment_id)
    response: HttpResponse
    if request.headers.get("HX-Request") == "true":
        response = render(request, "admin/contacts/segment/preview.html", answer)
    else:
        response = JsonResponse(answer)
    response["Cache-Control"] = "no-store"
    return response
