"""Email delivery: templates, sender profiles, the outbox (Message) and suppressions.

The outbox is the source of truth: a message is a row created in the same transaction as its
cause, with a unique idempotency key, and a delivery worker moves it through its statuses with
conditional UPDATEs (see campaigns/delivery.py). Redis only carries the "go look" signal.
"""

from __future__ import annotations

import hashlib
import json
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from contacts.emails import suppression_hash
from contacts.models import Contact


class MessageKind(models.TextChoices):
    # Marketing sends need consent and obey quiet hours and the frequency cap; transactional
    # ones (a registration confirmation, a receipt) only stop for bounces, complaints, erasure.
    MARKETING = "marketing", "Marketing"
    TRANSACTIONAL = "transactional", "Transactional"


class EmailTemplate(models.Model):
    key = models.SlugField(max_length=100, unique=True, help_text="How workflows and the API name it")
    name = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=20, choices=MessageKind.choices, default=MessageKind.MARKETING)
    # The subscription group its marketing sends go under (issue 20): a contact who left the topic
    # in the preference center is not sent it (consent/selectors.py topic_refusals).
    topic = models.ForeignKey("consent.Topic", null=True, blank=True, on_delete=models.PROTECT,
                              related_name="templates", db_index=False,
                              help_text="Marketing only: contacts who left this topic are not sent it")
    subject = models.CharField(max_length=300)
    html = models.TextField(
        help_text="Django template syntax; {{ contact.first_name|default:'there' }}, {{ attributes.plan }}. "
                  "Autoescaped; only plain contact data is available."
    )
    text = models.TextField(blank=True, help_text="Plain-text part; derived from the HTML when empty")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key

    def clean(self) -> None:
        # A template that cannot render is an error the marketer sees at save time.
        from campaigns.rendering import TemplateInvalid, template_validate

        try:
            template_validate(subject=self.subject, html=self.html, text=self.text)
        except TemplateInvalid as exc:
            raise ValidationError({exc.part: str(exc)}) from None


class EmailTemplateRevision(models.Model):
    """The exact content of a template at one point (subject, HTML, text, kind, topic): immutable. Saving a
    template (admin, file import) makes one, deduplicated by content hash; workflow versions pin
    revisions (automation.TemplatePin), so production sends what was promoted, whatever the
    template's editable (draft) fields say now. Previews and test sends use those draft fields."""

    template = models.ForeignKey(EmailTemplate, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    kind = models.CharField(max_length=20, choices=MessageKind.choices, default=MessageKind.MARKETING)
    subject = models.CharField(max_length=300)
    html = models.TextField()
    text = models.TextField(blank=True)
    # The topic its marketing sends go under is part of what was approved (issue 20): a template's
    # new topic reaches production only with a promoted version, like its content.
    topic = models.ForeignKey("consent.Topic", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                              db_index=False)
    content_hash = models.CharField(max_length=64, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+", help_text="Who wrote this content (second-person approval)")
    source = models.CharField(max_length=50, blank=True, help_text="admin, import, migration, send")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["template", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["template", "number"], name="tplrevision_number_unique"),
            # Saving the same content again reuses its revision (and the import round trip makes nothing new).
            models.UniqueConstraint(fields=["template", "content_hash"], name="tplrevision_content_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.template.key} r{self.number}"


def template_content_hash(*, kind: str, subject: str, html: str, text: str, topic_id: int | None = None) -> str:
    # No topic: the hash revisions had before topics, so they still match their templates.
    payload = json.dumps([kind, subject, html, text, *([topic_id] if topic_id else [])], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


_rate_validator = RegexValidator(r"^\s*\d+(\.\d+)?\s*/\s*\d*\s*[smhd]\s*$",
                                 "Use COUNT/UNIT, e.g. 50/s, 10000/h, 100/10s")


class SenderProfile(models.Model):
    """Who sends, through which backend, how fast, and when not."""

    name = models.CharField(max_length=100, unique=True)
    from_email = models.EmailField()
    from_name = models.CharField(max_length=100, blank=True)
    reply_to = models.EmailField(blank=True)
    email_url = models.CharField(
        max_length=500, blank=True,
        help_text="Backend URL like smtp://user:pass@host:587/?tls=True; empty: the EMAIL_URL setting",
    )
    rate = models.CharField(max_length=20, default="50/s", validators=[_rate_validator],
                            help_text="Shared by every worker, e.g. 50/s or 10000/h")
    burst = models.PositiveIntegerField(default=10, help_text="Messages allowed back to back above the rate")
    domain_limits = models.JSONField(
        default=dict, blank=True, help_text='Per recipient domain, e.g. {"gmail.com": "20/s", "yahoo.com": "5/s"}'
    )
    warmup_started_on = models.DateField(null=True, blank=True, help_text="Day 1 of the warm-up schedule")
    warmup_schedule = models.JSONField(
        default=list, blank=True,
        help_text="Daily caps while warming up, e.g. [500, 1000, 2000, 5000]: day 1 sends at most 500",
    )
    quiet_hours_start = models.TimeField(null=True, blank=True, help_text="Marketing sends wait from this time...")
    quiet_hours_end = models.TimeField(null=True, blank=True, help_text="...until this time (sender's time zone)")
    time_zone = models.CharField(max_length=64, default="UTC")
    frequency_cap = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many marketing emails per contact..."
    )
    frequency_days = models.PositiveIntegerField(default=7, help_text="...in this many days")
    postal_address = models.CharField(max_length=300, blank=True, help_text="Shown in every email's footer")
    staging_recipient = models.EmailField(
        blank=True, help_text="Staging workflow versions send here instead of to the test contact"
    )
    is_default = models.BooleanField(default=False)
    is_paused = models.BooleanField(default=False, help_text="Hold this sender's queue without losing it")
    # DKIM (campaigns/dkim_signing.py): signing is on when a domain is set. The key lives in an
    # environment variable LEADFLOW_DKIM_* (wins) or encrypted here (core/secrets.py), never in clear.
    dkim_domain = models.CharField(max_length=253, blank=True,
                                   help_text="Signing domain (d=), normally the From address's domain; empty: no DKIM")
    dkim_selector = models.CharField(max_length=63, blank=True,
                                     help_text="Selector (s=): the key is published at <selector>._domainkey.<domain>")
    dkim_key_env = models.CharField(max_length=100, blank=True,
                                    help_text="Environment variable holding the PEM private key (LEADFLOW_DKIM_...)")
    dkim_key_encrypted = models.TextField(blank=True, editable=False)
    # Bounce mailbox (campaigns/bounce_mailbox.py): the IMAP mailbox the Return-Path leads to, polled for
    # DSNs and feedback reports. Off while the host is empty. The password lives in an environment
    # variable LEADFLOW_IMAP_* (wins) or encrypted here (core/secrets.py), never in clear.
    bounce_imap_host = models.CharField("IMAP host", max_length=253, blank=True,
                                        help_text="IMAP server; empty: no bounce mailbox")
    bounce_imap_port = models.PositiveIntegerField("IMAP port", null=True, blank=True,
                                                   help_text="Empty: 993 for TLS, 143 for STARTTLS or plain")
    bounce_imap_security = models.CharField(
        "IMAP security", max_length=10, default="tls",
        choices=[("tls", "TLS (port 993)"), ("starttls", "STARTTLS (port 143)"),
                 ("plain", "None (a server on a trusted network only)")])
    bounce_imap_user = models.CharField("IMAP user", max_length=254, blank=True)
    bounce_imap_password_env = models.CharField(
        "IMAP password env", max_length=100, blank=True,
        help_text="Environment variable holding the password (LEADFLOW_IMAP_...)")
    bounce_imap_password_encrypted = models.TextField(blank=True, editable=False)
    bounce_imap_folder = models.CharField("IMAP folder", max_length=200, default="INBOX", blank=True,
                                          help_text="The folder bounces arrive in")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=models.Q(is_default=True),
                                    name="sender_one_default"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from campaigns.bounce_mailbox import bounce_mailbox_problems
        from campaigns.delivery_rules import backend_config, sender_validate
        from core.outbound import SMTP_BACKENDS, host_problem

        errors = sender_validate(self)
        errors.update(_dkim_problems(self))
        errors.update(bounce_mailbox_problems(self))
        if self.email_url and "email_url" not in errors:
            # An SMTP host that is an internal address (or localhost) is refused here; a name is
            # checked on every connection (core.outbound.CheckedSmtpBackend).
            config = backend_config(self.email_url)
            if config["backend"] in SMTP_BACKENDS and (problem := host_problem(str(config["host"]))):
                errors["email_url"] = f"SMTP host {problem}"
        if errors:
            raise ValidationError(errors)


_DKIM_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"


def _dkim_problems(sender: SenderProfile) -> dict[str, str]:
    """Field -> what is wrong with the sender's DKIM settings (the key itself is checked on save
    in the admin, and again by each delivery batch)."""
    import re

    from campaigns.dkim_signing import key_env_problem

    errors: dict[str, str] = {}
    if sender.dkim_domain:
        domain = sender.dkim_domain.strip().lower().rstrip(".")
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            errors["dkim_domain"] = f"{sender.dkim_domain!r} is not a domain name"
        if "dkim_domain" not in errors and not re.fullmatch(rf"{_DKIM_LABEL}(\.{_DKIM_LABEL})+", domain):
            errors["dkim_domain"] = f"{sender.dkim_domain!r} is not a domain name"
        sender.dkim_domain = domain
        if not re.fullmatch(rf"{_DKIM_LABEL}(\.{_DKIM_LABEL})*", sender.dkim_selector or ""):
            errors["dkim_selector"] = "A selector is required when signing: letters, digits and hyphens, e.g. lf2026"
        if not sender.dkim_key_env and not sender.dkim_key_encrypted:
            errors["dkim_key_env"] = "Name an environment variable holding the key, or store a key"
    if sender.dkim_key_env and (problem := key_env_problem(sender.dkim_key_env)):
        errors["dkim_key_env"] = problem
    return errors


class MessageStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    DEFERRED = "deferred", "Deferred"  # retry later: quiet hours, warm-up cap, a 4xx, a lost connection
    FAILED = "failed", "Failed"  # permanent: the reason says why; retryable by hand
    BOUNCED = "bounced", "Bounced"
    SUPPRESSED = "suppressed", "Suppressed"  # not sent on purpose: the reason says which rule


PENDING_STATUSES = (MessageStatus.QUEUED, MessageStatus.DEFERRED)


class Message(models.Model):
    """One email to one contact: the outbox row. Never deleted by delivery; erased with the contact."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="messages")
    # No single-column indexes on template and sender: every status change of a message would
    # update them (3 writes per email), and the partial indexes below serve the per-sender queries.
    # Deleting a template or sender that has messages is refused (PROTECT) via a rare full scan.
    template = models.ForeignKey(EmailTemplate, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="messages", db_index=False)
    # The exact content it renders (a workflow step: the revision its version pins); empty on
    # messages queued before revisions existed, which render the template's fields.
    revision = models.ForeignKey(EmailTemplateRevision, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="+", db_index=False)
    sender = models.ForeignKey(SenderProfile, on_delete=models.PROTECT, related_name="messages", db_index=False)
    kind = models.CharField(max_length=20, choices=MessageKind.choices, default=MessageKind.MARKETING)
    idempotency_key = models.CharField(max_length=200, unique=True,
                                       help_text="The cause: e.g. enrollment + step, or test:<uuid>")
    context = models.JSONField(default=dict, blank=True, help_text="Extra plain data for the template")
    source = models.CharField(max_length=100, blank=True, help_text="What created it: workflow, admin test, API")
    # Staging versions redirect to the sender's staging recipient and mark the subject.
    redirect_to = models.EmailField(blank=True)
    is_test = models.BooleanField(default=False)
    # To staff, not to the contact (a workflow's notify_sales): goes to to_email as queued (the
    # staging recipient in staging), plain text from context, no footer, pixel, click tracking or
    # List-Unsubscribe; only that address's suppression counts; bounces never touch the contact.
    internal = models.BooleanField(default=False, db_default=False)
    # The cause's correlation id (a workflow step: its enrollment's; else the request or job that
    # queued it), so a sent email is followed back to its event (core/logs.py).
    correlation_id = models.CharField(max_length=100, blank=True, default="", db_default="")

    status = models.CharField(max_length=20, choices=MessageStatus.choices, default=MessageStatus.QUEUED)
    reason = models.CharField(max_length=50, blank=True,
                              help_text="Why it is failed, bounced, suppressed or deferred (a short code)")
    last_error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    claimed_at = models.DateTimeField(null=True, blank=True)

    # Rendered content, fixed at the first send attempt so a retry sends the same email.
    to_email = models.EmailField(blank=True)
    subject = models.CharField(max_length=300, blank=True)
    html = models.TextField(blank=True)
    text = models.TextField(blank=True)
    links = models.JSONField(default=list, blank=True, help_text="The URLs in the message; clicks may go only here")
    provider_message_id = models.CharField(max_length=255, blank=True, help_text="Our Message-ID header")
    # The id the SMTP server gave the message in its reply to DATA (Amazon SES: "250 Ok <id>", the
    # id its notifications carry as mail.messageId): how a provider's report finds the message.
    relay_message_id = models.CharField(max_length=255, blank=True, default="", db_default="",
                                        help_text="The id the SMTP server answered the send with")

    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    # Deliverability rates per sender and day (core/ops.py sender_rates): when a complaint was
    # matched to this message, and when it hard-bounced (a provider's report or a 55x at RCPT).
    complained_at = models.DateTimeField(null=True, blank=True)
    bounced_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True,
                                        help_text="When the provider reported it handed to the recipient's server")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        permissions = [("retry_message", "Can retry failed messages")]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=MessageStatus.values), name="message_status_valid"),
        ]
        indexes = [
            # Delivery workers claim due messages per sender, oldest first.
            models.Index(fields=["sender", "next_attempt_at", "id"], name="message_due_idx",
                         condition=models.Q(status__in=["queued", "deferred"])),
            # The sweeper finds messages claimed by a worker that died.
            models.Index(fields=["claimed_at"], name="message_sending_idx", condition=models.Q(status="sending")),
            # Frequency cap: marketing messages a contact was sent recently.
            models.Index(fields=["contact", "sent_at"], name="message_contact_sent_idx",
                         condition=models.Q(status="sent")),
            # Sender rates (operations page, /metrics, the complaint and bounce alerts): hard bounces
            # of the last days; sent ones come from message_sender_sent_idx (one range per sender).
            models.Index(fields=["bounced_at"], name="message_bounced_idx",
                         condition=models.Q(bounced_at__isnull=False)),
            # Admin filter and per-sender rates.
            models.Index(fields=["status", "-updated_at"], name="message_status_idx"),
            models.Index(fields=["sender", "sent_at"], name="message_sender_sent_idx",
                         condition=models.Q(status="sent")),
            # Bounce, complaint and delivery reports (POST /api/v1/bounces) find their message by the
            # provider's id, our Message-ID header, else the address it went to.
            models.Index(fields=["relay_message_id"], name="message_relay_id_idx",
                         condition=~models.Q(relay_message_id="")),
            models.Index(fields=["provider_message_id"], name="message_header_id_idx",
                         condition=~models.Q(provider_message_id="")),
            models.Index(fields=["to_email"], name="message_to_email_idx", condition=~models.Q(to_email="")),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.status}"


class SuppressionReason(models.TextChoices):
    UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
    HARD_BOUNCE = "hard_bounce", "Hard bounce"
    COMPLAINT = "complaint", "Spam complaint"
    ERASED = "erased", "Erased (GDPR)"
    MANUAL = "manual", "Added by hand"


def email_hash(email: str) -> str:
    """The suppression list's key: a hash of the canonical address (contacts/emails.py), so every
    spelling of a suppressed address (fullwidth, upper-case or Unicode domain) finds the entry."""
    return suppression_hash(email)


class Suppression(models.Model):
    """An address we must not email. Keyed by a hash so an erased person stays suppressed without
    keeping their address (the email column is blanked for erasures)."""

    email_hash = models.CharField(max_length=64, unique=True, editable=False)
    email = models.EmailField(blank=True)
    reason = models.CharField(max_length=20, choices=SuppressionReason.choices)
    detail = models.TextField(blank=True, help_text="The bounce diagnostic or complaint feedback")
    source = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.email or self.email_hash[:12]} ({self.reason})"


def new_claim_token() -> uuid.UUID:
    return uuid.uuid4()


class BounceItemStatus(models.TextChoices):
    PROCESSED = "processed", "Processed"  # a bounce or complaint, applied
    IGNORED = "ignored", "Ignored"  # an automatic reply, a delay of nothing of ours, a non-spam feedback type
    UNPARSED = "unparsed", "Unparsed"  # left in the mailbox for a human, with the reason


class BounceMailboxItem(models.Model):
    """One mail read from a bounce mailbox (campaigns/bounce_mailbox.py). Its row is written in the same
    transaction as the suppressions and message updates it causes, under a unique key per mailbox, so
    a poll that dies before flagging the mail in IMAP reads it again and changes nothing twice."""

    mailbox = models.CharField(max_length=400, help_text="user@host:port/folder")
    key = models.CharField(max_length=255, help_text="The mail's Message-ID, else sha256 of its bytes")
    sender = models.ForeignKey(SenderProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                               db_index=False)
    uid = models.BigIntegerField(null=True, blank=True, help_text="IMAP UID when it was read")
    status = models.CharField(max_length=20, choices=BounceItemStatus.choices)
    kind = models.CharField(max_length=20, blank=True, help_text="bounce, complaint or ignored")
    subject = models.CharField(max_length=300, blank=True)
    reason = models.TextField(blank=True, help_text="Why it was ignored or could not be parsed")
    recipients = models.JSONField(default=list, blank=True,
                                  help_text="Per recipient: address, hard/soft/complaint, status, message, outcome")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # Idempotency: the same mail in the same mailbox is applied once (bounce_mailbox_poll).
            models.UniqueConstraint(fields=["mailbox", "key"], name="bounceitem_mailbox_key_unique"),
        ]
        indexes = [
            # Ops: the unparsed mails waiting for a human.
            models.Index(fields=["-created_at"], name="bounceitem_unparsed_idx",
                         condition=models.Q(status="unparsed")),
        ]

    def __str__(self) -> str:
        return f"{self.mailbox} {self.key[:40]} ({self.status})"


class EngagementKind(models.IntegerChoices):
    # Small integers: the table holds a row per open and click of every email ever sent.
    OPEN = 1, "Open"
    CLICK = 2, "Click"
    UNSUBSCRIBE = 3, "Unsubscribe"  # consent withdrawn or a topic left through this email's link
    SOFT_BOUNCE = 4, "Soft bounce"  # a provider's transient report (hard bounces: Message.bounced_at)


ENGAGEMENT_CAP = 100  # rows per message and kind: a bot replaying one pixel or link stops adding rows here


class MessageEngagement(models.Model):
    """What a recipient (or a provider) did with a message, one row per hit, at most ENGAGEMENT_CAP
    per message and kind: append-only, never updated, so totals, uniques (distinct messages) and
    per-link counts are GROUP BYs (campaigns/reports.py). Message.opened_at/clicked_at keep the
    first open and click; a hit the public endpoints do not record (HEAD, over the token's rate
    limit, a test copy, past the cap) has no row."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+", db_index=False)
    kind = models.PositiveSmallIntegerField(choices=EngagementKind.choices)
    link_index = models.PositiveSmallIntegerField(null=True, blank=True,
                                                  help_text="Clicks: the index into the message's links")
    occurred_at = models.DateTimeField()
    # The row's place among its message's rows of its kind (1..ENGAGEMENT_CAP), unique: the cap
    # holds under concurrent hits (two hits taking the same slot keep one row). Empty on rows
    # recorded before the cap.
    slot = models.PositiveSmallIntegerField(null=True, blank=True, help_text="1..100 per message and kind")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=EngagementKind.values), name="engagement_kind_valid"),
            # A click names its link; nothing else does.
            models.CheckConstraint(condition=models.Q(kind=EngagementKind.CLICK, link_index__isnull=False)
                                   | (~models.Q(kind=EngagementKind.CLICK) & models.Q(link_index__isnull=True)),
                                   name="engagement_link_only_clicks"),
            # Partial (a unique index, built concurrently on PostgreSQL): rows from before the cap have no slot.
            models.UniqueConstraint(fields=["message", "kind", "slot"], condition=models.Q(slot__isnull=False),
                                    name="engagement_one_row_per_slot"),
        ]
        indexes = [
            # Reports (campaigns/reports.py report_for): a set of messages' rows, by time; also the
            # cascade when a contact's messages are erased.
            models.Index(fields=["message", "occurred_at"], name="engagement_message_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.message_id} {self.get_kind_display()}"


class SnsNotification(models.Model):
    """An Amazon SNS notification already processed, by its MessageId: SNS delivers at least once
    and a retry repeats the MessageId, so a second copy changes nothing (a soft bounce would be
    counted twice). Rows older than SNS_MAX_AGE_SECONDS are pruned: such copies are refused anyway
    (campaigns/sns.py)."""

    message_id = models.CharField(max_length=100, unique=True)
    timestamp = models.DateTimeField(help_text="The notification's own Timestamp (when SNS published it)")

    class Meta:
        indexes = [
            # Pruning (campaigns/sns.py sns_notification_claim): the rows past the replay window.
            models.Index(fields=["timestamp"], name="sns_notification_ts_idx"),
        ]

    def __str__(self) -> str:
        return f"SNS {self.message_id}"
