"""Admin for API keys (imported by contacts/admin.py): list, create (the key is shown once, in a
message after saving), revoke. The hash is never shown; keys are revoked, not deleted, so the
events they sent keep a meaningful source."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from contacts.apikeys import api_key_create, api_key_revoke
from contacts.models import ApiKey


class ApiKeyAddForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["name", "rate_limit_per_minute", "create_unknown_contacts"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "rate_limit_per_minute", "create_unknown_contacts", "created_by",
                    "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["created_by"]
    search_fields = ["name", "prefix"]
    actions = ["revoke"]
    fields = ["name", "prefix", "rate_limit_per_minute", "create_unknown_contacts", "created_by", "created_at",
              "last_used_at", "revoked_at"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ApiKeyAddForm.Meta.fields if obj is None else self.fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return ["name", "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, raw = api_key_create(
            name=obj.name, created_by=request.user, rate_limit_per_minute=obj.rate_limit_per_minute,
            create_unknown_contacts=obj.create_unknown_contacts,
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
