"""Consent admin: topics and signup forms are built here; the history and opt-ins are records."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from consent.forms_public import form_field_choices, redirect_refusal
from consent.models import ConsentRecord, OptInRequest, SignupForm, Topic
from core.admin_utils import ReadOnlyAdmin
from core.dependents import DependentsWarningMixin


@admin.register(Topic)
class TopicAdmin(DependentsWarningMixin, admin.ModelAdmin):  # production versions send under topics (issue 24)
    list_display = ["key", "name", "one_click_scope", "created_at"]
    search_fields = ["key", "name"]
    prepopulated_fields = {"key": ["name"]}


class SignupFormAdminForm(forms.ModelForm):
    redirect_url = forms.URLField(required=False, assume_scheme="https", max_length=200,
                                  help_text="After submitting; must be on SITE_URL's host or in FORM_REDIRECT_HOSTS")
    class Meta:
        model = SignupForm
        fields = ["name", "slug", "fields", "lists", "topics", "double_opt_in", "success_message", "redirect_url",
                  "active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The model's JSON list, picked from contact fields and custom fields by checkbox.
        self.fields["fields"] = forms.MultipleChoiceField(
            required=False, choices=form_field_choices(), widget=forms.CheckboxSelectMultiple,
            initial=self.instance.fields if self.instance.pk else [],
            help_text="Asked besides the email address (contact fields and custom fields)")

    def clean_redirect_url(self) -> str:
        url = str(self.cleaned_data.get("redirect_url") or "")
        refusal = redirect_refusal(url)
        if refusal:
            raise forms.ValidationError(refusal)
        return url


@admin.register(SignupForm)
class SignupFormAdmin(admin.ModelAdmin):
    form = SignupFormAdminForm
    list_display = ["name", "slug", "double_opt_in", "active", "public_url"]
    list_filter = ["active", "double_opt_in"]
    search_fields = ["name", "slug"]
    filter_horizontal = ["lists", "topics"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["public_url", "embed_snippet", "created_at"]

    @admin.display(description="Public URL")
    def public_url(self, obj: SignupForm) -> str:
        if not obj.pk:
            return "—"
        url = settings.SITE_URL.rstrip("/") + reverse("consent:form", args=[obj.slug])
        return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, url)

    @admin.display(description="Embed snippet (HTML)")
    def embed_snippet(self, obj: SignupForm) -> str:
        if not obj.pk:
            return "Save the form first."
        from consent.forms_public import embed_html

        return format_html('<textarea id="embed-snippet" readonly rows="12" cols="90">{}</textarea>',
                           embed_html(obj))


@admin.register(ConsentRecord)
class ConsentRecordAdmin(ReadOnlyAdmin):
    list_display = ["at", "contact", "topic", "status", "previous_status", "source", "detail", "actor"]
    list_filter = ["source", "status", "topic"]
    search_fields = ["=contact__email", "=email_hash"]
    list_select_related = ["contact", "topic"]
    raw_id_fields = ["contact"]


@admin.register(OptInRequest)
class OptInRequestAdmin(ReadOnlyAdmin):
    list_display = ["id", "contact", "form", "status", "created_at", "reminded_at", "confirmed_at"]
    list_filter = ["status"]
    search_fields = ["=contact__email"]
    list_select_related = ["contact", "form"]
