"""Admin for scoring: rules (saving one queues a recompute), grade bands, recompute jobs and the ledger."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse

from contacts.builder import RULE_TARGETS, builder_view
from core.admin_utils import ReadOnlyAdmin
from scoring.forms import ScoringRuleForm
from scoring.models import GradeBand, RecomputeJob, ScoreEntry, ScoringRule
from scoring.services import recompute_job_create


@admin.register(ScoringRule)
class ScoringRuleAdmin(admin.ModelAdmin):
    form = ScoringRuleForm
    list_display = ["name", "kind", "event_type", "points", "repeatable", "cap_points", "cap_window_days",
                    "half_life_days", "is_active", "updated_at"]
    list_filter = ["kind", "is_active"]
    search_fields = ["name", "event_type"]
    # The page shows only the section of the chosen kind (static/scoring/rule_form.css); the event
    # type is picked from the types known and seen, and property filters and fit conditions are built
    # by point and click (scoring/forms.py, contacts/builder.py), their JSON kept as the advanced view.
    fieldsets = [
        (None, {"fields": ["name", "kind", "is_active", "points"]}),
        ("Behaviour (events)", {"fields": ["event_type", "property_filters", "repeatable",
                                           ("cap_points", "cap_window_days"), "half_life_days"],
                                "classes": ["rule-kind-behaviour"]}),
        ("Fit (who the contact is)", {"fields": ["conditions"], "classes": ["rule-kind-fit"],
                                      "description": "Build the conditions below; the JSON is the same "
                                                     "filter tree as segments (docs/scoring.md)."}),
    ]
    change_form_template = "admin/scoring/scoringrule/change_form.html"

    def get_urls(self) -> list[URLPattern]:
        builder = path("builder/", self.admin_site.admin_view(self.builder_view), name="scoring_scoringrule_builder")
        return [builder, *super().get_urls()]

    def builder_view(self, request: HttpRequest) -> HttpResponse:
        """One edit of a rule form's builders (contacts/builder.py); who may add or change rules."""
        if not (self.has_add_permission(request) or self.has_change_permission(request)):
            raise PermissionDenied
        return builder_view(request, targets=RULE_TARGETS, endpoint=reverse("admin:scoring_scoringrule_builder"))

    def save_model(self, request: HttpRequest, obj: ScoringRule, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        job = recompute_job_create(reason=f"rule {'changed' if change else 'added'}: {obj.name}",
                                   created_by=request.user)
        self.message_user(request, f"Scores are being recomputed (recompute #{job.pk}).", messages.INFO)


@admin.register(GradeBand)
class GradeBandAdmin(admin.ModelAdmin):
    list_display = ["grade", "min_score", "is_mql"]

    def save_model(self, request: HttpRequest, obj: GradeBand, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        recompute_job_create(reason=f"grade band {'changed' if change else 'added'}: {obj.grade}",
                             created_by=request.user)

    def delete_model(self, request: HttpRequest, obj: GradeBand) -> None:
        grade = obj.grade
        super().delete_model(request, obj)
        recompute_job_create(reason=f"grade band deleted: {grade}", created_by=request.user)

RECOMPUTE_JOB_FIELDS = ("reason", "status", "progress", "message", "created_by", "created_at", "started_at",
                        "finished_at")


@admin.register(RecomputeJob)
class RecomputeJobAdmin(admin.ModelAdmin):
    """Read-only history; "add" (Marketer) queues a recompute of changed rules and all scores."""

    list_display = ["id", "reason", "status", "progress", "created_by", "created_at", "started_at", "finished_at"]
    list_filter = ["status"]
    list_select_related = ["created_by"]
    fields = RECOMPUTE_JOB_FIELDS

    def get_readonly_fields(self, request: HttpRequest, obj: RecomputeJob | None = None) -> list[str]:
        return [f for f in RECOMPUTE_JOB_FIELDS if obj is not None or f != "reason"]

    def has_change_permission(self, request: HttpRequest, obj: RecomputeJob | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: RecomputeJob | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: RecomputeJob, form: Any, change: bool) -> None:
        job = recompute_job_create(reason=obj.reason or "manual recompute", created_by=request.user)
        obj.pk = job.pk  # the admin redirects to the job the service created


@admin.register(ScoreEntry)
class ScoreEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "contact", "rule_name", "points", "half_life_days", "explanation", "event"]
    list_select_related = ["contact"]
    list_filter = ["rule_name"]
    search_fields = ["contact__email", "rule_name"]
    raw_id_fields = ["contact", "rule", "event"]
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet[ScoreEntry]:
        return super().get_queryset(request).defer("contact__attributes")
