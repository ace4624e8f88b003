from __future__ import annotations

from django.conf import settings
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
    # database-level foreign keys: PostgreSQL checks one with a locking lookup per inserted row,
    # which was three quarters of a recompute. Django applies on_delete itself (CASCADE, SET_NULL)
    # as before, and every writer takes its ids from rows it reads in the same statement.
    # No single-column indexes on contact and rule: (contact, rule, -created_at) and the unique
    # (rule, event) lead with them, and every index costs the recompute a write per entry.
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="score_entries", db_index=False,
                                db_constraint=False)
    rule = models.ForeignKey(ScoringRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="entries",
                             db_index=False, db_constraint=False)
    rule_name = models.CharField(max_length=150, help_text="Kept when the rule is deleted")
    event = models.ForeignKey(Event, null=True, blank=True, on_delete=models.SET_NULL, related_name="score_entries",
                              db_constraint=False)  # indexed: SET_NULL when an erasure deletes events
    points = models.IntegerField()
    half_life_days = models.PositiveIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("view_leads", "Can see the sales lead view")]
        indexes = [
            # Score breakdown, caps, fit holdings, score_events' "already holds an entry", and the
            # cached-score UPDATE per contact: one contact's entries per rule over time.
            models.Index(fields=["contact", "rule", "-created_at"], name="scoreentry_contact_rule_idx"),
        ]
        constraints = [
            # One event scores once per rule, however often it is processed. Not partial: NULL events
            # (fit entries) never conflict anyway, and so it also serves the recompute's
            # `DELETE ... WHERE rule_id = %s` (fit entries included) in place of a rule index.
            models.UniqueConstraint(fields=["rule", "event"], name="scoreentry_rule_event_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.points:+d} {self.rule_name}"


class GradeBand(models.Model):
    """Score thresholds: a contact's grade is the band with the highest min_score it reaches."""

    grade = models.CharField(max_length=2, unique=True)
    min_score = models.IntegerField(unique=True)
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
