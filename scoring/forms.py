"""Forms of the scoring app: the rule editor's validation and the lead list's filters."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.urls import reverse

from contacts.builder import RULE_TARGETS, BuilderWidget, EventTypeWidget, LazyOptions
from contacts.models import LifecycleStage, Segment
from scoring.models import GradeBand, RuleKind, ScoringRule
from scoring.selectors import LeadFilters


class ScoringRuleForm(forms.ModelForm):
    class Meta:
        model = ScoringRule
        fields = [
            "name", "kind", "is_active", "points", "event_type", "property_filters", "repeatable",
            "cap_points", "cap_window_days", "half_life_days", "conditions",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """The event type, property filters and fit conditions are built by clicking (contacts/builder.py):
        known event types and their seen properties are offered; the JSON stays as the advanced view."""
        super().__init__(*args, **kwargs)
        endpoint, options = reverse("admin:scoring_scoringrule_builder"), LazyOptions()
        if "event_type" in self.fields:
            self.fields["event_type"].widget = EventTypeWidget(endpoint=endpoint, options=options)
        if "property_filters" in self.fields:
            self.fields["property_filters"].widget = BuilderWidget(
                target=RULE_TARGETS["property_filters"], endpoint=endpoint, options=options,
                event_type=str(self["event_type"].value() or "") if "event_type" in self.fields else "")
        if "conditions" in self.fields:
            self.fields["conditions"].widget = BuilderWidget(target=RULE_TARGETS["conditions"], endpoint=endpoint,
                                                             options=options)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind = data.get("kind")
        if kind == RuleKind.BEHAVIOUR:
            self._clean_behaviour(data)
        elif kind == RuleKind.FIT:
            self._clean_fit(data)
        cap, window = data.get("cap_points"), data.get("cap_window_days")
        if (cap is None) != (window is None):
            self.add_error("cap_window_days" if window is None else "cap_points",
                           "A cap needs both the points and the window in days.")
        elif cap is not None and window is not None:
            points = data.get("points") or 0
            if window < 1:
                self.add_error("cap_window_days", "The window must be at least one day.")
            if cap == 0 or (points and (cap > 0) != (points > 0)):
                self.add_error("cap_points", "The cap must have the same sign as the points.")
        if data.get("half_life_days") == 0:
            self.add_error("half_life_days", "A half-life must be at least one day (leave empty for none).")
        return data

    def _clean_behaviour(self, data: dict[str, Any]) -> None:
        if not (data.get("event_type") or "").strip():
            self.add_error("event_type", "Behaviour rules need the event type they score.")
        filters = data.get("property_filters")
        if filters is not None and not isinstance(filters, dict):
            self.add_error("property_filters", 'Use an object: {"property": value}.')
        elif filters and any(not isinstance(key, str) or "__" in key or not key for key in filters):
            self.add_error("property_filters", "Property names must be non-empty and must not contain '__'.")

    def _clean_fit(self, data: dict[str, Any]) -> None:
        from contacts.segments.compiler import validate_filter

        conditions = data.get("conditions")
        if not conditions:
            self.add_error("conditions", "Fit rules need conditions (a filter tree).")
            return
        errors = validate_filter(conditions)
        for error in errors:
            self.add_error("conditions", error)
        if data.get("cap_points") is not None:
            self.add_error("cap_points", "Caps apply to behaviour rules only.")
        if data.get("half_life_days"):
            self.add_error("half_life_days", "Fit points do not decay; leave the half-life empty.")


class LeadFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Search", max_length=200)
    grade = forms.ChoiceField(required=False)
    owner = forms.ModelChoiceField(queryset=get_user_model().objects.none(), required=False)
    lifecycle_stage = forms.ChoiceField(required=False, label="Stage",
                                        choices=[("", "Any stage"), *LifecycleStage.choices])
    segment = forms.ModelChoiceField(queryset=Segment.objects.none(), required=False)
    mql_this_week = forms.BooleanField(required=False, label="Became MQL this week")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        grade_field: Any = self.fields["grade"]
        grade_field.choices = [("", "Any grade"), *((g, g) for g in GradeBand.objects.values_list("grade", flat=True))]
        owner_field: Any = self.fields["owner"]
        owner_field.queryset = get_user_model().objects.filter(is_active=True, is_staff=True).order_by("username")
        owner_field.empty_label = "Any owner"
        segment_field: Any = self.fields["segment"]
        segment_field.queryset = Segment.objects.order_by("name")
        segment_field.empty_label = "Any segment"

    def lead_filters(self) -> LeadFilters:
        """The filters of a bound form; an invalid value drops that filter only (a filter, not a submission)."""
        self.is_valid()
        data = self.cleaned_data  # holds the valid fields only
        owner, segment = data.get("owner"), data.get("segment")
        return LeadFilters(
            q=data.get("q") or "", grade=data.get("grade") or "", owner_id=owner.pk if owner else None,
            lifecycle_stage=data.get("lifecycle_stage") or "", segment_id=segment.pk if segment else None,
            mql_this_week=bool(data.get("mql_this_week")),
        )
