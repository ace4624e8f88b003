"""Admin for CRM sync: connections (token and signing secret write-only, encrypted), the sync queue,
the error list, the sync log (per contact and per connection), and the actions "sync now",
"resync all" and "retry". Thin: check the permission, call one service, report."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from automation.crm.models import CrmConnection, CrmSyncError, CrmSyncItem, CrmSyncLog, SyncStatus
from automation.crm.selectors import connection_status_counts
from automation.crm.services import crm_resync_all, crm_retry_failed, crm_sync_now
from automation.crm.vault import encrypt
from core.admin_utils import EstimatedCountPaginator, ReadOnlyAdmin
from core.audit import audit_record
from core.dependents import DependentsWarningMixin

SYNC_PERM = "crm.sync_crmconnection"


class CrmConnectionForm(forms.ModelForm):
    base_url = forms.URLField(max_length=500, assume_scheme="https",
                              help_text="HubSpot: https://api.hubapi.com; Salesforce: your My Domain URL "
                                        "(https://<domain>.my.salesforce.com); webhook: the full URL")
    token = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False), strip=True,
                            help_text="Stored encrypted; leave empty to keep the current one. Prefer the "
                                      "environment variable (token env).")
    signing_secret = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False), strip=True,
                                     help_text="Shared with the CRM for inbound webhooks (and signed outbound "
                                               "webhooks); stored encrypted; leave empty to keep the current one.")

    sf_object = forms.ChoiceField(choices=[("Lead", "Lead"), ("Contact", "Contact")], required=False, initial="Lead",
                                  help_text="Salesforce: the object contacts are upserted as")

    def clean_sf_object(self) -> str:
        return self.cleaned_data.get("sf_object") or "Lead"  # only Salesforce reads it

    class Meta:
        model = CrmConnection
        fields = ["name", "kind", "base_url", "api_version", "client_id", "sf_object", "external_id_field",
                  "token_env", "field_mapping", "value_mapping",
                  "score_step", "rate_limit", "batch_size", "timeout_seconds", "account_time_zone", "is_sandbox",
                  "is_active"]
        help_texts = {"token_env": "Name of the environment variable holding the API token (preferred); it must "
                                   "start with LEADFLOW_CRM_ or be listed in the CRM_TOKEN_ENV_ALLOWED setting"}

    def save(self, commit: bool = True) -> CrmConnection:
        conn = super().save(commit=False)
        if self.cleaned_data.get("token"):
            conn.token_encrypted = encrypt(self.cleaned_data["token"])
        if self.cleaned_data.get("signing_secret"):
            conn.signing_secret_encrypted = encrypt(self.cleaned_data["signing_secret"])
        if commit:
            conn.save()
        return conn


@admin.register(CrmConnection)
class CrmConnectionAdmin(DependentsWarningMixin, admin.ModelAdmin):
    form = CrmConnectionForm
    list_display = ["name", "kind", "is_active", "is_sandbox", "rate_limit", "batch_size", "paused", "queue", "links"]
    list_filter = ["kind", "is_active", "is_sandbox"]
    readonly_fields = ["token_stored", "inbound_url", "paused", "values_in_force", "queue", "links"]
    actions = ["sync_due", "resync_all", "retry_failed"]

    @admin.display(description="token stored")
    def token_stored(self, obj: CrmConnection) -> str:
        return "yes (encrypted)" if obj.token_encrypted else "no"

    @admin.display(description="paused")
    def paused(self, obj: CrmConnection) -> str:
        from django.utils import timezone

        if obj.paused_until and obj.paused_until > timezone.now():
            return f"until {obj.paused_until:%Y-%m-%d %H:%M} UTC: the CRM's daily API limit is spent"
        return "no"

    @admin.display(description="value mapping in force")
    def values_in_force(self, obj: CrmConnection) -> str:
        import json

        return json.dumps(obj.values(), sort_keys=True) if obj.pk else "-"

    @admin.display(description="inbound webhook")
    def inbound_url(self, obj: CrmConnection) -> str:
        return reverse("crm:inbound-status", args=[obj.pk]) if obj.pk else "-"

    @admin.display(description="queue")
    def queue(self, obj: CrmConnection) -> str:
        if not obj.pk:
            return "-"
        counts = connection_status_counts(connection=obj)
        return ", ".join(f"{counts.get(s, 0)} {s}" for s in SyncStatus.values)

    @admin.display(description="")
    def links(self, obj: CrmConnection) -> str:
        if not obj.pk:
            return "-"
        return format_html(
            '<a href="{}?connection__id__exact={}">sync log</a> · <a href="{}?connection__id__exact={}">errors</a>',
            reverse("admin:crm_crmsynclog_changelist"), obj.pk, reverse("admin:crm_crmsyncerror_changelist"), obj.pk)

    def save_model(self, request: HttpRequest, obj: CrmConnection, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        changed = [name for name in form.changed_data if name not in {"token", "signing_secret"}]
        secrets_changed = [name for name in ("token", "signing_secret") if form.cleaned_data.get(name)]
        audit_record(actor=request.user, action="crm.connection_saved" if change else "crm.connection_created",
                     target=obj, data={"fields": changed, "secrets_replaced": secrets_changed})

    @admin.action(description="Sync now (send what is queued)", permissions=["sync"])
    def sync_due(self, request: HttpRequest, queryset: QuerySet[CrmConnection]) -> None:
        from automation.crm.services import enqueue_sync

        for conn in queryset:
            enqueue_sync(connection_id=conn.pk)
        self.message_user(request, f"Sync started for {queryset.count()} connection(s).")

    @admin.action(description="Resync all contacts", permissions=["sync"])
    def resync_all(self, request: HttpRequest, queryset: QuerySet[CrmConnection]) -> None:
        total = sum(crm_resync_all(connection=conn, actor=request.user) for conn in queryset)
        self.message_user(request, f"{total} contact(s) queued for a full resync.")

    @admin.action(description="Retry failed contacts", permissions=["sync"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[CrmConnection]) -> None:
        total = sum(crm_retry_failed(connection=conn, actor=request.user) for conn in queryset)
        self.message_user(request, f"{total} failed contact(s) queued again.")

    def has_sync_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(SYNC_PERM)


class _ItemAdminBase(admin.ModelAdmin):
    list_display = ["contact_email", "connection", "status", "reason", "attempts", "next_attempt_at", "synced_at",
                    "short_error", "log_link"]
    list_filter = ["status", "connection"]
    list_select_related = ["contact", "connection"]
    search_fields = ["contact__email", "=correlation_id"]  # the id of the change that last queued the row
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    raw_id_fields = ["contact"]
    actions = ["sync_now", "retry"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_sync_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(SYNC_PERM)

    @admin.display(description="contact", ordering="contact__email")
    def contact_email(self, obj: CrmSyncItem) -> str:
        return obj.contact.email

    @admin.display(description="last error")
    def short_error(self, obj: CrmSyncItem) -> str:
        return obj.last_error[:120]

    @admin.display(description="log")
    def log_link(self, obj: CrmSyncItem) -> str:
        return format_html('<a href="{}?contact__id__exact={}">log</a>',
                           reverse("admin:crm_crmsynclog_changelist"), obj.contact_id)

    @admin.action(description="Sync now (send even if unchanged)", permissions=["sync"])
    def sync_now(self, request: HttpRequest, queryset: QuerySet[CrmSyncItem]) -> None:
        total = 0
        by_connection: dict[int, list[int]] = {}
        for connection_id, contact_id in queryset.values_list("connection_id", "contact_id"):
            by_connection.setdefault(connection_id, []).append(contact_id)
        for conn in CrmConnection.objects.filter(pk__in=by_connection):
            total += crm_sync_now(connection=conn, contact_ids=by_connection[conn.pk], actor=request.user)
        self.message_user(request, f"{total} contact(s) queued.")

    @admin.action(description="Retry (failed ones)", permissions=["sync"])
    def retry(self, request: HttpRequest, queryset: QuerySet[CrmSyncItem]) -> None:
        count = crm_retry_failed(item_ids=list(queryset.values_list("pk", flat=True)), actor=request.user)
        self.message_user(request, f"{count} failed contact(s) queued again.")


@admin.register(CrmSyncItem)
class CrmSyncItemAdmin(_ItemAdminBase):
    pass


@admin.register(CrmSyncError)
class CrmSyncErrorAdmin(_ItemAdminBase):
    """The error list: failed rows with the CRM's message; retry after fixing the data."""

    list_display = ["contact_email", "connection", "last_error", "attempts", "log_link"]
    list_filter = ["connection"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[CrmSyncItem]:
        return super().get_queryset(request).filter(status=SyncStatus.FAILED)


@admin.register(CrmSyncLog)
class CrmSyncLogAdmin(ReadOnlyAdmin):
    """The sync log; filter by contact (?contact__id__exact=) or by connection."""

    list_display = ["at", "connection", "contact", "outcome", "http_status", "attempt", "message"]
    list_filter = ["outcome", "connection"]
    list_select_related = ["contact", "connection"]
    search_fields = ["contact__email"]
    raw_id_fields = ["contact"]
