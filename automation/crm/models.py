"""CRM sync: connections, the sync queue (one row per contact x connection) and its log.

The queue row *is* the idempotency key: `(connection, contact)` is unique, so every reason to sync
a contact (a mapped field changed, the score crossed a step, a workflow's `crm_sync` step, "sync
now") lands on the same row and coalesces. `synced_hash` remembers what the CRM last accepted, so
an unchanged payload is never sent again; a permanent rejection stays `failed` until the data
changes or someone retries it by hand (the Mautic lesson: never re-push rejected leads forever).
"""

from __future__ import annotations

import re

from django.db import models

from contacts.models import Contact


class ConnectionKind(models.TextChoices):
    HUBSPOT = "hubspot", "HubSpot"
    SALESFORCE = "salesforce", "Salesforce"
    WEBHOOK = "webhook", "Signed webhook (generic)"


class CrmConnection(models.Model):
    Kind = ConnectionKind

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=ConnectionKind.choices)
    base_url = models.URLField(max_length=500, help_text="HubSpot: https://api.hubapi.com; webhook: the full URL")
    token_env = models.CharField(
        max_length=100, blank=True, help_text="Name of the environment variable holding the API token (preferred)")
    token_encrypted = models.TextField(blank=True, editable=False, help_text="Fernet token; set through the admin")
    signing_secret_encrypted = models.TextField(
        blank=True, editable=False, help_text="Shared secret for inbound webhooks and signed outbound webhooks")
    field_mapping = models.JSONField(
        default=dict, blank=True,
        help_text='Our field -> CRM property, e.g. {"first_name": "firstname", "score": "lead_score", '
                  '"attributes.plan": "plan"}. The email is always sent (it identifies the contact).')
    value_mapping = models.JSONField(
        default=dict, blank=True,
        help_text='Per mapped field, our value -> the CRM\'s value for enumeration properties, e.g. '
                  '{"lifecycle_stage": {"mql": "marketingqualifiedlead"}}. HubSpot: lifecycle_stage mapped to '
                  'lifecyclestage defaults to HubSpot\'s internal stage names. Values without an entry are sent '
                  'as they are.')
    api_version = models.CharField(
        max_length=10, default="v3",
        help_text='HubSpot API path version: "v3" (/crm/v3/objects/...) or a date version such as "2026-03" '
                  '(/crm/objects/2026-03/...)')
    account_time_zone = models.CharField(
        max_length=64, default="UTC",
        help_text="The CRM account's time zone (HubSpot: Settings > Account defaults); its daily API limit "
                  "resets at midnight there")
    client_id = models.CharField(
        max_length=200, blank=True,
        help_text="Salesforce: the connected app's consumer key (OAuth 2.0 client credentials); its secret is the "
                  "token (token env or token)")
    sf_object = models.CharField(max_length=20, default="Lead", choices=[("Lead", "Lead"), ("Contact", "Contact")],
                                 help_text="Salesforce: the object contacts are upserted as")
    external_id_field = models.CharField(
        max_length=80, blank=True,
        help_text="Salesforce: the external-id field the upsert matches on (it receives the email), e.g. "
                  "Leadflow_Email__c")
    paused_until = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="The CRM's daily API limit is spent: nothing is sent before this (its next midnight)")
    score_step = models.PositiveIntegerField(
        default=10, help_text="When score is mapped: a score change queues a sync only when it crosses a multiple "
                              "of this step (0: every change). Grade and MQL changes always count.")
    rate_limit = models.CharField(max_length=30, default="100/10s",
                                  help_text="Requests the CRM allows, shared by all workers (HubSpot: 100/10s)")
    batch_size = models.PositiveSmallIntegerField(default=100, help_text="Contacts per request (HubSpot: at most 100)")
    timeout_seconds = models.PositiveSmallIntegerField(default=30)
    is_sandbox = models.BooleanField(default=False, help_text="Staging workflow versions sync to this connection")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "CRM connection"
        permissions = [("sync_crmconnection", "Can sync now, retry failed items and resync all")]
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=ConnectionKind.values), name="crmconnection_kind_valid"),
            models.CheckConstraint(condition=models.Q(batch_size__gte=1, batch_size__lte=1000),
                                   name="crmconnection_batch_size_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()}{', sandbox' if self.is_sandbox else ''})"

    def values(self) -> dict[str, dict[str, str]]:
        """The value mapping in force (HubSpot's lifecycle stage names by default)."""
        from automation.crm.mapping import values_for

        return values_for(kind=self.kind, mapping=self.field_mapping or {}, values=self.value_mapping)

    def clean(self) -> None:
        from automation.crm.connectors.hubspot import version_problem
        from automation.crm.mapping import (  # the mapping module reads Contact fields
            time_zone_problem,
            validate_mapping,
            validate_value_mapping,
        )
        from automation.crm.vault import token_env_problem
        from core.outbound import url_problem
        from core.throttle import parse_rate

        super().clean()
        errors: dict[str, str] = {}
        try:
            parse_rate(self.rate_limit)
        except ValueError as exc:
            errors["rate_limit"] = str(exc)
        if self.kind == ConnectionKind.HUBSPOT and self.batch_size > 100:
            errors["batch_size"] = "HubSpot's batch upsert takes at most 100 inputs."
        problem = validate_mapping(self.field_mapping)
        if problem:
            errors["field_mapping"] = problem
        elif problem := validate_value_mapping(self.value_mapping, self.field_mapping):
            errors["value_mapping"] = problem
        if self.kind == ConnectionKind.HUBSPOT and (problem := version_problem(self.api_version)):
            errors["api_version"] = problem
        if self.kind == ConnectionKind.SALESFORCE:
            from automation.crm.connectors.salesforce import MAX_RECORDS
            from automation.crm.connectors.salesforce import version_problem as sf_version_problem

            if problem := sf_version_problem(self.api_version):
                errors["api_version"] = problem
            if self.batch_size > MAX_RECORDS:
                errors["batch_size"] = f"Salesforce's sObject Collections take at most {MAX_RECORDS} records."
            if not self.client_id:
                errors["client_id"] = "Salesforce needs the connected app's consumer key."
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", self.external_id_field or ""):
                errors["external_id_field"] = "Name the external-id field, e.g. Leadflow_Email__c."
        if problem := time_zone_problem(self.account_time_zone):
            errors["account_time_zone"] = problem
        if self.token_env and (problem := token_env_problem(self.token_env)):
            errors["token_env"] = problem
        # Names are checked again on every connection (core.outbound); this catches literals early.
        if self.base_url and (problem := url_problem(self.base_url)):
            errors["base_url"] = problem
        if errors:
            from django.core.exceptions import ValidationError

            raise ValidationError(errors)


class SyncStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SYNCED = "synced", "Synced"
    FAILED = "failed", "Failed"


class CrmSyncItem(models.Model):
    """One contact's sync state on one connection (the queue row)."""

    Status = SyncStatus

    # db_index off: crmsyncitem_unique leads with connection; contact keeps its index (erasure cascades).
    connection = models.ForeignKey(CrmConnection, on_delete=models.CASCADE, related_name="items", db_index=False)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="crm_items")
    status = models.CharField(max_length=10, choices=SyncStatus.choices, default=SyncStatus.PENDING)
    reason = models.CharField(max_length=40, blank=True, help_text="Why it was last queued")
    payload_hash = models.CharField(max_length=64, blank=True, help_text="Hash of the payload last queued or sent")
    synced_hash = models.CharField(max_length=64, blank=True, help_text="Hash of the payload the CRM last accepted")
    force = models.BooleanField(default=False, help_text="Send even if the payload is unchanged (sync now, resync)")
    dirty = models.BooleanField(default=False, help_text="Changed again while being sent: send once more")
    dry_run = models.BooleanField(default=False, help_text="Record what would be sent, send nothing (staging)")
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    crm_id = models.CharField(max_length=100, blank=True, help_text="The record's id in the CRM")
    queued_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    # The correlation id of the change that last queued the row (an event, an enrollment's step,
    # a request or job). The row is coalesced per contact, so the latest change wins: earlier
    # causes are in the logs, not here.
    correlation_id = models.CharField(max_length=100, blank=True, default="", db_default="")

    class Meta:
        verbose_name = "CRM sync item"
        ordering = ["-id"]
        constraints = [
            # The idempotency key: every reason to sync a contact coalesces on this row.
            models.UniqueConstraint(fields=["connection", "contact"], name="crmsyncitem_unique"),
            models.CheckConstraint(condition=models.Q(status__in=SyncStatus.values), name="crmsyncitem_status_valid"),
        ]
        indexes = [
            # The sync job (tasks.crm_sync_run) claims due pending rows of one connection, oldest first.
            models.Index(fields=["connection", "next_attempt_at", "id"], name="crmsyncitem_due_idx",
                         condition=models.Q(status="pending")),
            # The sweeper (tasks.crm_sweeper) finds rows whose worker died mid-send.
            models.Index(fields=["claimed_at"], name="crmsyncitem_sending_idx", condition=models.Q(status="sending")),
            # The error list in the admin and per-connection counts.
            models.Index(fields=["connection", "status"], name="crmsyncitem_status_idx"),
        ]

    def __str__(self) -> str:
        return f"contact {self.contact_id} -> {self.connection_id}: {self.status}"


class CrmSyncError(CrmSyncItem):
    """The failed rows, as their own admin list (the error list)."""

    class Meta:
        proxy = True
        verbose_name = "CRM sync error"


class LogOutcome(models.TextChoices):
    SYNCED = "synced", "Synced"
    UNCHANGED = "unchanged", "Unchanged (not sent)"
    DRY_RUN = "dry_run", "Dry run (not sent)"
    RETRY = "retry", "Will retry"
    FAILED = "failed", "Failed"
    RATE_LIMITED = "rate_limited", "Rate limited"
    QUEUED = "queued", "Queued by hand"
    INBOUND = "inbound", "Status from the CRM"


class CrmSyncLog(models.Model):
    """What happened, per contact (contact set) or per request (contact empty), newest first."""

    Outcome = LogOutcome

    # db_index off on both: the two composite indexes below lead with them.
    connection = models.ForeignKey(CrmConnection, on_delete=models.CASCADE, related_name="log", db_index=False)
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.CASCADE, related_name="crm_log",
                                db_index=False)
    at = models.DateTimeField()
    outcome = models.CharField(max_length=20, choices=LogOutcome.choices)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    attempt = models.PositiveSmallIntegerField(default=0)
    message = models.TextField(blank=True)

    class Meta:
        verbose_name = "CRM sync log entry"
        verbose_name_plural = "CRM sync log"
        ordering = ["-at", "-id"]
        indexes = [
            # The sync log of one contact (admin, filtered by contact) and of one connection.
            models.Index(fields=["contact", "-at"], name="crmsynclog_contact_idx"),
            models.Index(fields=["connection", "-at"], name="crmsynclog_connection_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.outcome} {self.at:%Y-%m-%d %H:%M:%S}"
