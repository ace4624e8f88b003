"""Admin for API keys (imported by contacts/admin.py): list, create (the key is shown once, in a
message after saving), change limit and scopes (audited), revoke. The hash is never shown; keys are
revoked, not deleted, so the events they sent keep a meaningful source."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from contacts.apikeys import EDITABLE, api_key_create, api_key_revoke, api_key_update
from contacts.models import ApiKey, ApiScope, api_key_default_scopes


class ApiKeyForm(forms.ModelForm):
    # Checkboxes instead of the JSON text box the model's JSONField would get.
    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple, initial=api_key_default_scopes,
        help_text="Give each integration only what it uses: a key with bounces:write can suppress any address.")

    class Meta:
        model = ApiKey
        fields = ["name", "rate_limit_per_minute", "create_unknown_contacts", "scopes"]

    def clean_scopes(self) -> list[str]:
        chosen = set(self.cleaned_data["scopes"])
        return [scope for scope in ApiScope.values if scope in chosen]  # one stable order


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ["name", "prefix", "scope_list", "rate_limit_per_minute", "create_unknown_contacts", "created_by",
                    "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["created_by"]
    search_fields = ["name", "prefix"]
    actions = ["revoke"]
    fields = ["name", "prefix", "scopes", "rate_limit_per_minute", "create_unknown_contacts", "created_by",
              "created_at", "last_used_at", "revoked_at"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ApiKeyForm.Meta.fields if obj is None else self.fields

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes or []) or "none"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return ["name", "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            api_key_update(api_key=obj, actor=request.user,
                           **{name: form.cleaned_data[name] for name in EDITABLE if name in form.cleaned_data})
            return
        key, raw = api_key_create(
            name=obj.name, created_by=request.user, rate_limit_per_minute=obj.rate_limit_per_minute,
            create_unknown_contacts=obj.create_unknown_contacts, scopes=form.cleaned_data["scopes"],
        )
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = key.pk, key.prefix, key.key_hash, key.created_at
        obj._state.adding, obj._state.db = False, key._state.db
        self.message_user(
            request, f"The key for {key.name} is {raw} . Copy it now: it is not stored and will not be shown "
                     "again.", messages.WARNING,
        )

    @admin.action(description="Revoke the selected keys (at once, for good)", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(api_key_revoke(api_key=key, actor=request.user) for key in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
