"""Broadcasts: one-off campaigns to segments and lists, sent through the outbox (campaigns.Message).

A broadcast pins template revisions (one per variant), names its audience, sender and schedule,
and is sent only as approved: the approval records a fingerprint of the revisions, the audience
definition and the sender, and a broadcast whose fingerprint changed since is not sent (an edit
voids the approval). Recipients are materialised set-based into BroadcastRecipient (unique per
broadcast x contact), and each one's message carries the idempotency key
broadcast:<id>:<contact id>, unique in the outbox: a contact gets a broadcast at most once,
whatever is retried. See docs/broadcasts.md.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from campaigns.models import EmailTemplate, EmailTemplateRevision, Message, SenderProfile
from campaigns.utm import UtmInvalid, utm_clean
from contacts.models import Contact, ContactList, Segment


class BroadcastStatus(models.TextChoices):
    DRAFT = "draft", "Draft"  # being built; a test send and an approval come next
    APPROVED = "approved", "Approved"  # what will be sent is fixed; not scheduled yet
    SCHEDULED = "scheduled", "Scheduled"  # starts at send_at (broadcasts_tick)
    SENDING = "sending", "Sending"  # recipients are being queued / the A/B test is running
    PAUSED = "paused", "Paused"  # nothing more is queued; its queued messages are held
    QUEUED = "queued", "Queued"  # every recipient has its message in the outbox; delivery finishes it
    CANCELLED = "cancelled", "Cancelled"  # never-sent messages were cancelled with the reason


# Statuses in which the broadcast's content and audience may still be edited.
EDITABLE_STATUSES = (BroadcastStatus.DRAFT, BroadcastStatus.APPROVED)


class ScheduleKind(models.TextChoices):
    NOW = "now", "Now (when started)"
    AT = "at", "At a time"
    LOCAL = "local", "In each contact's time zone, within a window"


class AbMetric(models.TextChoices):
    OPENS = "opens", "Unique opens"
    CLICKS = "clicks", "Unique clicks"


_key_validator = RegexValidator(r"^[a-z0-9][a-z0-9_-]*$", "lower-case letters, digits, - and _")


class Broadcast(models.Model):
    key = models.SlugField(max_length=100, unique=True, validators=[_key_validator],
                           help_text="How the API and `manage.py broadcast_send` name it")
    name = models.CharField(max_length=200)
    sender = models.ForeignKey(SenderProfile, on_delete=models.PROTECT, related_name="+")
    # Audience: contacts in any of the segments or lists, minus those in any excluded one.
    segments = models.ManyToManyField(Segment, blank=True, related_name="+")
    lists = models.ManyToManyField(ContactList, blank=True, related_name="+")
    exclude_segments = models.ManyToManyField(Segment, blank=True, related_name="+")
    exclude_lists = models.ManyToManyField(ContactList, blank=True, related_name="+")

    schedule = models.CharField(max_length=10, choices=ScheduleKind.choices, default=ScheduleKind.NOW)
    send_at = models.DateTimeField(null=True, blank=True,
                                   help_text="At a time: when it starts. Each contact's time zone: the day it goes")
    window_start = models.TimeField(null=True, blank=True, help_text="Each contact's time zone: from this local time")
    window_end = models.TimeField(null=True, blank=True, help_text="...to this local time")

    # A/B test (2-4 variants): this share of the audience gets the variants; after ab_wait_minutes
    # the variant with the best rate of ab_metric wins and the rest of the audience gets it.
    test_share = models.PositiveSmallIntegerField(
        default=20, validators=[MinValueValidator(1), MaxValueValidator(90)],
        help_text="Percent of the audience in the A/B test (with two or more variants)")
    ab_metric = models.CharField(max_length=10, choices=AbMetric.choices, default=AbMetric.OPENS)
    ab_wait_minutes = models.PositiveIntegerField(default=240, validators=[MinValueValidator(1)],
                                                  help_text="How long the test runs, from its last test message "
                                                            "sent, before the winner is chosen")
    # Review finding 4: a winner chosen over a handful of sent messages is a coin toss. The decision
    # waits until every variant has this many sent (or none of its test messages is left to send).
    ab_min_sent = models.PositiveIntegerField(
        default=100, validators=[MinValueValidator(1)],
        help_text="Sent test messages each variant needs before the winner is chosen "
                  "(fewer only when none is left to send)")
    # UTM parameters for its tracked links (issue 21 item 4, campaigns/utm.py), e.g.
    # {"utm_source": "leadflow", "utm_medium": "email", "utm_campaign": "spring-sale"}. Empty: untouched.
    utm = models.JSONField(default=dict, blank=True,
                           help_text='UTM parameters for its links, e.g. {"utm_campaign": "spring-sale"}; '
                                     "the unsubscribe link is never tagged")

    status = models.CharField(max_length=20, choices=BroadcastStatus.choices, default=BroadcastStatus.DRAFT)
    status_message = models.TextField(blank=True, help_text="Why it is paused or cancelled, or what went wrong")
    paused_from = models.CharField(max_length=20, blank=True, editable=False)

    # The test send and the approval are of one fingerprint (revisions + audience + sender + A/B).
    fingerprint = models.CharField(max_length=64, blank=True, editable=False)
    test_fingerprint = models.CharField(max_length=64, blank=True, editable=False)
    test_sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    approved_fingerprint = models.CharField(max_length=64, blank=True, editable=False)
    approved_definition = models.JSONField(default=dict, blank=True, editable=False,
                                           help_text="What was approved: revisions, audience, sender")
    approved_count = models.PositiveIntegerField(null=True, blank=True, editable=False)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+", editable=False)
    approved_at = models.DateTimeField(null=True, blank=True, editable=False)

    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    queued_at = models.DateTimeField(null=True, blank=True, editable=False)
    recipients_total = models.PositiveIntegerField(default=0, editable=False)
    ab_decide_at = models.DateTimeField(null=True, blank=True, editable=False)
    winner = models.PositiveSmallIntegerField(null=True, blank=True, editable=False,
                                              help_text="The winning variant's position")
    decision = models.JSONField(default=dict, blank=True, editable=False,
                                help_text="The A/B decision and its numbers")

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        permissions = [("approve_broadcast", "Can approve broadcasts above BROADCAST_APPROVAL_THRESHOLD contacts")]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=BroadcastStatus.values),
                                   name="broadcast_status_valid"),
        ]
        indexes = [
            # broadcasts_tick: scheduled ones that are due, sending ones to resume or decide.
            models.Index(fields=["status"], name="broadcast_active_idx",
                         condition=models.Q(status__in=["scheduled", "sending"])),
        ]

    def __str__(self) -> str:
        return self.key

    def clean(self) -> None:
        try:
            utm_clean(self.utm, where="utm")
        except UtmInvalid as exc:
            raise ValidationError({"utm": str(exc)}) from exc

    @property
    def source(self) -> str:
        """Message.source of its messages."""
        return f"broadcast:{self.key}"[:100]

    def idempotency_prefix(self) -> str:
        return f"broadcast:{self.pk}:"


class BroadcastVariant(models.Model):
    """One content of the broadcast (one without A/B): a template and the revision it pins."""

    broadcast = models.ForeignKey(Broadcast, on_delete=models.CASCADE, related_name="variants")
    position = models.PositiveSmallIntegerField(help_text="0 = A, 1 = B, ...")
    template = models.ForeignKey(EmailTemplate, on_delete=models.PROTECT, related_name="+")
    subject = models.CharField(max_length=300, blank=True,
                               help_text="A/B on the subject: this subject instead of the template's")
    revision = models.ForeignKey(EmailTemplateRevision, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="+", editable=False, help_text="What this variant sends")

    class Meta:
        ordering = ["broadcast", "position"]
        constraints = [
            models.UniqueConstraint(fields=["broadcast", "position"], name="bcvariant_position_unique"),
            models.CheckConstraint(condition=models.Q(position__lte=3), name="bcvariant_at_most_four"),
        ]

    def __str__(self) -> str:
        return f"{self.broadcast_id} {self.label}"

    @property
    def label(self) -> str:
        return "ABCD"[self.position] if self.position < 4 else str(self.position)


class BroadcastRecipient(models.Model):
    """One contact of a started broadcast: materialised set-based, then given its outbox message."""

    broadcast = models.ForeignKey(Broadcast, on_delete=models.CASCADE, related_name="recipients", db_index=False)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+", db_index=False)
    # The variant's position; NULL: in the rest of an A/B test's audience, waiting for the winner.
    variant = models.PositiveSmallIntegerField(null=True, blank=True)
    send_at = models.DateTimeField(null=True, blank=True, help_text="Not before (each contact's time zone)")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                db_index=False)

    class Meta:
        constraints = [
            # At most once per contact, whatever is retried (the message's key is unique too).
            models.UniqueConstraint(fields=["broadcast", "contact"], name="bcrecipient_unique"),
        ]
        indexes = [
            # _queue_chunk: the next recipients without a message, in id order. (A broadcast's messages
            # for progress, pause, cancel and the A/B counts: bcrecipient_unique, broadcast first.)
            models.Index(fields=["broadcast", "id"], name="bcrecipient_pending_idx",
                         condition=models.Q(message__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.broadcast_id}/{self.contact_id}"
