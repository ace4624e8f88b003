from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models

from contacts.models import Contact, Event


class RuleKind(models.TextChoices):
    BEHAVIOUR = "behaviour", "Behaviour (events)"
    FIT = "fit", "Fit (contact fields)"


class ScoringRule(models.Model):
    """Points for what a contact does (behaviour) or who they are (fit). Points may be negative."""

    name = models.CharField(max_length=150, unique=True)
    kind = models.CharField(max_length=10, choices=RuleKind.choices)
    event_type = models.CharField(max_length=100, blank=True, help_text="Behaviour rules: the event that scores")
    property_filters = models.JSONField(default=dict, blank=True,
                                        help_text='Behaviour rules: {"property": value} the event must have')
    conditions = models.JSONField(default=dict, blank=True, help_text="Fit rules: a segment-style filter tree")
    points = models.IntegerField()
    repeatable = models.BooleanField(
        default=True, help_text="Behaviour: score every matching event, not just the first"
    )
    cap_points = models.IntegerField(
        null=True, blank=True, help_text="Most points this rule gives a contact per window"
    )
    cap_window_days = models.PositiveIntegerField(null=True, blank=True)
    half_life_days = models.PositiveIntegerField(null=True, blank=True, help_text="Points halve every N days")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=RuleKind.values), name="scoringrule_kind_valid"),
        ]

    def __str__(self) -> str:
        return self.name


class ScoreEntry(models.Model):
    """The ledger: every point a contact got or lost, with the rule and the event behind it."""

    # The ledger is written in bulk (a full recompute inserts millions of entries), so it carries no
    # database-level foreign keys (PostgreSQL checks each with a locking lookup per inserted row) and
    # one index besides the primary key: every index costs a write per entry, and a recompute's entries
    # go in contact order, so this one fills front to back. Django applies on_delete itself. Deleting a
    # rule (SET_NULL) or an erasure's events (SET_NULL; the contact's entries go with it) scans the
    # ledger: rare, and cheaper than indexing rule and event for them.
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="score_entries", db_index=False,
                                db_constraint=False)
    rule = models.ForeignKey(ScoringRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="entries",
                             db_index=False, db_constraint=False)
    rule_name = models.CharField(max_length=150, help_text="Kept when the rule is deleted")
    event = models.ForeignKey(Event, null=True, blank=True, on_delete=models.SET_NULL, related_name="score_entries",
                              db_index=False, db_constraint=False)
    points = models.IntegerField()
    half_life_days = models.PositiveIntegerField(null=True, blank=True)
    # Blank for an event's entry (the event says it; see explanation): millions of entries need no
    # copy of "page_view event #123" each, which was a fifth of a recompute's writes.
    reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "score entries"  # Django's default said "Score entrys"
        permissions = [("view_leads", "Can see the sales lead view")]
        constraints = [
            # One event scores once per rule, however often it is processed. An event belongs to one
            # contact, so this is the same rule as unique (rule, event); leading with the contact, the
            # index also serves the score breakdown, caps, fit holdings and the cached-score upsert
            # (one contact's entries per rule). NULL events (fit entries) never conflict.
            models.UniqueConstraint(fields=["contact", "rule", "event"], name="scoreentry_contact_rule_event_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.points:+d} {self.rule_name}"

    @property
    def explanation(self) -> str:
        """Why this entry exists: its reason, or the event that earned it."""
        if self.reason:
            return self.reason
        return f"event #{self.event_id}" if self.event_id is not None else ""


class GradeBand(models.Model):
    """Score thresholds: a contact's grade is the band with the highest min_score it reaches."""

    grade = models.CharField(max_length=2, unique=True)
    # Above 0: a contact at 0, which includes every contact that never scored (no ContactScore
    # row), has no grade; a band from 0 or below would grade only the contacts that have a row.
    min_score = models.IntegerField(unique=True, validators=[MinValueValidator(1)],
                                    help_text="At least 1: contacts at 0 or below have no grade")
    is_mql = models.BooleanField(default=False, help_text="Reaching this band makes the contact an MQL")

    class Meta:
        ordering = ["-min_score"]

    def __str__(self) -> str:
        return f"{self.grade} (≥ {self.min_score})"


class RecomputeJob(models.Model):
    """A full, set-based score recompute (after a rule edit), visible with its progress."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    reason = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    message = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Recompute #{self.pk} ({self.status})"
