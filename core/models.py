from django.conf import settings
from django.db import models


class Heartbeat(models.Model):
    """Last time a named background loop proved it is alive (e.g. scheduler -> queue -> worker).

    Written by the periodic `core.tasks.heartbeat` job, so a fresh row means the scheduler
    enqueued, Redis carried and a worker ran a job. Ops reads it on the health endpoints.
    """

    name = models.CharField(max_length=100, unique=True)
    seen_at = models.DateTimeField()
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} @ {self.seen_at:%Y-%m-%d %H:%M:%S}"


class AuditEntry(models.Model):
    """Who did what to which object, and when. Written by core.audit.audit_record only.

    Entries never hold personal data of contacts (an erased contact stays erased): the
    target is a type and an id, and `data` carries counts and settings, not names or emails.
    """

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_label = models.CharField(max_length=150, help_text="Username or system component, kept if the user goes")
    action = models.CharField(max_length=100)
    target_type = models.CharField(max_length=100)
    target_id = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            # "History of this object" on admin pages.
            models.Index(fields=["target_type", "target_id", "-at"], name="audit_target_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.target_type}#{self.target_id}"


class Switch(models.Model):
    """A global kill switch ops can throw: work is held where it is (rows stay queued), not lost.

    Checked by the delivery and CRM sync jobs before they claim anything; the sweepers keep
    offering the work every minute, so resuming needs no replay."""

    class Name(models.TextChoices):
        SENDING = "sending", "All email sending"
        CRM_SYNC = "crm_sync", "All CRM sync"

    name = models.CharField(max_length=30, choices=Name.choices, unique=True)
    paused = models.BooleanField(default=False)
    reason = models.CharField(max_length=300, blank=True)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        permissions = [("view_operations", "Can see the operations page")]

    def __str__(self) -> str:
        return f"{self.get_name_display()}: {'paused' if self.paused else 'running'}"


class Incident(models.Model):
    """An alert rule that fired (core/alerts.py): open until its condition clears. Notified once."""

    key = models.CharField(max_length=100, help_text="Rule and subject, e.g. queue_age:delivery")
    summary = models.CharField(max_length=300)
    detail = models.JSONField(default=dict, blank=True)
    opened_at = models.DateTimeField()
    notified_at = models.DateTimeField(null=True, blank=True)
    notify_error = models.TextField(blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            # At most one open incident per rule and subject: "at most once per incident" is this row.
            models.UniqueConstraint(fields=["key"], condition=models.Q(resolved_at__isnull=True),
                                    name="incident_one_open_per_key"),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({'open' if self.resolved_at is None else 'resolved'})"
