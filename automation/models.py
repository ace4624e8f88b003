"""Versioned nurture workflows: definitions (Workflow, WorkflowVersion), the contacts running
them (Enrollment), what each step did (StepRun) and outbound calls steps make (WebhookDelivery).

Invariants live in the database: one staging and one production version per workflow, one live
enrollment per contact and workflow, one StepRun and one WebhookDelivery per idempotency key.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

from contacts.models import Contact, Segment


class Workflow(models.Model):
    key = models.SlugField(max_length=100, unique=True, help_text="How files and the CLI name it")
    name = models.CharField(max_length=200)
    test_segment = models.ForeignKey(
        Segment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Staging runs for contacts marked 'is test' and for members of this segment",
    )
    paused = models.BooleanField(default=False, help_text="Hold every enrollment where it is; admit no one new")
    timezone = models.CharField(max_length=64, default="UTC", help_text="For waits on a weekday/hour window")
    auto_rollback = models.BooleanField(
        default=False, db_default=False,
        help_text="Roll a new production version back by itself when its steps start failing or its emails bounce "
                  "or draw complaints (AUTO_ROLLBACK_* settings); never the first version")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        permissions = [("promote_workflow", "Can promote a workflow version to production and roll back")]

    def __str__(self) -> str:
        return self.name or self.key


class VersionState(models.TextChoices):
    DRAFT = "draft", "Draft"
    STAGING = "staging", "Staging"
    PRODUCTION = "production", "Production"
    ARCHIVED = "archived", "Archived"


class WorkflowVersion(models.Model):
    """An immutable definition (see automation.definition); only its state changes."""

    State = VersionState

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField(help_text="The workflow as in a file: trigger, reentry, goal, steps")
    state = models.CharField(max_length=12, choices=VersionState.choices, default=VersionState.DRAFT)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    promoted_at = models.DateTimeField(null=True, blank=True, help_text="Last time it became production")
    replaced = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                 help_text="The production version it replaced when it last became production")

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "number"], name="wfversion_number_unique"),
            models.UniqueConstraint(fields=["workflow"], condition=Q(state="staging"),
                                    name="wfversion_one_staging"),
            models.UniqueConstraint(fields=["workflow"], condition=Q(state="production"),
                                    name="wfversion_one_production"),
            models.CheckConstraint(condition=Q(state__in=VersionState.values), name="wfversion_state_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow.key} v{self.number} ({self.state})"

    @property
    def steps(self) -> list[dict[str, Any]]:
        return list(self.definition.get("steps") or [])


class TemplatePin(models.Model):
    """The exact template revision a version sends for a template key: content is part of the
    version, so production changes only by a promotion (docs/workflows.md)."""

    version = models.ForeignKey(WorkflowVersion, on_delete=models.CASCADE, related_name="pins")
    template = models.ForeignKey("campaigns.EmailTemplate", on_delete=models.PROTECT, related_name="+")
    revision = models.ForeignKey("campaigns.EmailTemplateRevision", on_delete=models.PROTECT, related_name="pins")

    class Meta:
        ordering = ["version", "template"]
        constraints = [
            models.UniqueConstraint(fields=["version", "template"], name="templatepin_one_per_template"),
        ]

    def __str__(self) -> str:
        return f"{self.version} pins {self.revision}"


class EnrollmentStatus(models.TextChoices):
    ACTIVE = "active", "Active"  # running now (next_run_at is its lease: after it, the scheduler re-queues)
    WAITING = "waiting", "Waiting"  # asleep until next_run_at (a wait step, a retry, a paused workflow)
    COMPLETED = "completed", "Completed"
    EXITED = "exited", "Exited"
    GOAL_REACHED = "goal_reached", "Goal reached"
    FAILED = "failed", "Failed"


LIVE_STATUSES = (EnrollmentStatus.ACTIVE, EnrollmentStatus.WAITING)


class Enrollment(models.Model):
    Status = EnrollmentStatus

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="enrollments")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="enrollments")
    version = models.ForeignKey(WorkflowVersion, on_delete=models.PROTECT, related_name="enrollments",
                                help_text="Pinned: runs this version until the end unless migrated")
    is_staging = models.BooleanField(default=False)
    step_id = models.CharField(max_length=100, blank=True, help_text="Current step; empty once finished")
    seq = models.PositiveIntegerField(default=0, help_text="Steps started so far; part of step run keys")
    status = models.CharField(max_length=16, choices=EnrollmentStatus.choices, default=EnrollmentStatus.ACTIVE)
    next_run_at = models.DateTimeField(null=True, blank=True)
    trigger_event = models.ForeignKey("contacts.Event", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+", db_constraint=False)
    entered_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The triggering event's correlation id (a manual entry: the request's); its step runs,
    # messages and CRM rows carry it on (core/logs.py).
    correlation_id = models.CharField(max_length=100, blank=True, default="", db_default="")

    class Meta:
        ordering = ["-id"]
        constraints = [
            # One live run per contact and workflow; re-entry rules decide about finished ones.
            models.UniqueConstraint(fields=["contact", "workflow"], condition=Q(status__in=LIVE_STATUSES),
                                    name="enrollment_one_live"),
            # The same event (processed twice, or by two overlapping jobs) enrolls a contact once.
            models.UniqueConstraint(fields=["workflow", "trigger_event"], condition=Q(trigger_event__isnull=False),
                                    name="enrollment_one_per_event"),
            models.CheckConstraint(condition=Q(status__in=EnrollmentStatus.values), name="enrollment_status_valid"),
            # A live enrollment always has a time: when to wake (waiting) or when its lease ends (active).
            models.CheckConstraint(condition=~Q(status__in=LIVE_STATUSES) | Q(next_run_at__isnull=False),
                                   name="enrollment_live_has_time"),
        ]
        indexes = [
            # Scheduler (automation.engine.enrollments_wake): due sleepers, oldest first.
            models.Index(fields=["next_run_at"], name="enrollment_due_idx", condition=Q(status="waiting")),
            # Scheduler: active enrollments whose lease ran out (their job was lost with Redis or a worker).
            models.Index(fields=["next_run_at"], name="enrollment_lease_idx", condition=Q(status="active")),
            # Trigger evaluation (re-entry) and goals: a contact's enrollments in a workflow.
            models.Index(fields=["contact", "workflow", "-entered_at"], name="enrollment_contact_wf_idx"),
            # Dashboard and migration preview: counts per workflow, version, status and step.
            models.Index(fields=["workflow", "version", "status", "step_id"], name="enrollment_dashboard_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.workflow_id} ({self.status})"


class StepRunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting"  # a wait step, until result["until"]
    RETRYING = "retrying", "Failed, will retry"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class StepRun(models.Model):
    """One visit of a step by an enrollment. Its idempotency key (enrollment:step:seq) is unique, so
    a step runs once per visit however often a job is repeated; retries of a failed attempt reuse
    the row (attempt counts them) and so the same keys for their effects."""

    Status = StepRunStatus

    enrollment = models.ForeignKey(Enrollment, on_delete=models.CASCADE, related_name="step_runs")
    version = models.ForeignKey(WorkflowVersion, on_delete=models.CASCADE, related_name="+")
    step_id = models.CharField(max_length=100)
    step_type = models.CharField(max_length=20)
    attempt = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=12, choices=StepRunStatus.choices, default=StepRunStatus.RUNNING)
    idempotency_key = models.CharField(max_length=200, unique=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    correlation_id = models.CharField(max_length=100, blank=True, default="", db_default="")  # the enrollment's

    class Meta:
        ordering = ["enrollment", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=StepRunStatus.values), name="steprun_status_valid"),
        ]
        indexes = [
            # Dashboard: per version and step, how many passed, waited, failed.
            models.Index(fields=["version", "step_id", "status"], name="steprun_dashboard_idx"),
            # The operations page's failure-rate jumps: step runs finished in the last 25 hours, and
            # runs waiting to retry (no finished_at) by when they started.
            models.Index(fields=["finished_at"], name="steprun_finished_idx"),
            models.Index(fields=["started_at"], name="steprun_retrying_idx", condition=Q(status="retrying")),
        ]

    def __str__(self) -> str:
        return f"{self.idempotency_key} ({self.status})"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    DRY_RUN = "dry_run", "Dry run (staging)"


class WebhookDelivery(models.Model):
    """An outbound call of a `webhook` or `notify_sales` step (HTTP POST, or an email to sales),
    written in the step's transaction and sent by a job with bounded retries."""

    Status = DeliveryStatus

    class Channel(models.TextChoices):
        WEBHOOK = "webhook", "Webhook"
        EMAIL = "email", "Email"

    step_run = models.ForeignKey(StepRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries")
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    target = models.CharField(max_length=500, help_text="URL or email address")
    payload = models.JSONField(default=dict)
    idempotency_key = models.CharField(max_length=200, unique=True)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.CheckConstraint(condition=Q(status__in=DeliveryStatus.values), name="webhookdelivery_status_valid"),
        ]
        indexes = [
            # Scheduler (automation.engine.webhooks_wake): pending deliveries that are due.
            models.Index(fields=["next_attempt_at"], name="webhookdelivery_due_idx", condition=Q(status="pending")),
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.target} ({self.status})"
