"""Consent as a lifecycle (issue 20): every change is a row, topics are what contacts subscribe
to, signup forms and double opt-in requests are how consent is earned.

The contact keeps its current `consent_status` (delivery reads it in the hot path); this app keeps
the history behind it: who changed it, when, from where and with what proof.
"""

from __future__ import annotations

from django.db import models

from contacts.models import Contact, ContactList


class ConsentSource(models.TextChoices):
    API = "api", "API"
    ADMIN = "admin", "Admin"
    FORM = "form", "Signup form"
    CONFIRMATION = "confirmation", "Double opt-in confirmation"
    IMPORT = "import", "Import"
    UNSUBSCRIBE = "unsubscribe", "Unsubscribe"
    PREFERENCES = "preferences", "Preference center"
    COMPLAINT = "complaint", "Complaint"
    WORKFLOW = "workflow", "Workflow"
    OTHER = "other", "Other"


class ConsentRecord(models.Model):
    """One change of a contact's consent (or of one topic subscription): append-only.

    After an erasure the row stays with only the hash of the address (the same hash the
    suppression list keeps) and what happened when: no contact, IP or proof."""

    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="consent_records", db_index=False)  # index below
    email_hash = models.CharField(max_length=64, help_text="SHA-256 of the canonical address (kept after erasure)")
    topic = models.ForeignKey("Topic", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                              help_text="Empty: marketing consent as a whole", db_index=False)
    status = models.CharField(max_length=20, help_text="granted, withdrawn, unknown, pending; topics: "
                                                       "subscribed or unsubscribed")
    previous_status = models.CharField(max_length=20, blank=True)
    source = models.CharField(max_length=20, choices=ConsentSource.choices)
    detail = models.CharField(max_length=200, blank=True,
                              help_text="The source's own words (the contact's consent_source)")
    actor = models.CharField(max_length=150, blank=True, help_text="Who: a user name, an API key, 'the contact'")
    ip = models.GenericIPAddressField(null=True, blank=True)
    form = models.ForeignKey("SignupForm", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                             db_index=False)
    message_id = models.BigIntegerField(null=True, blank=True, help_text="The email whose link made the change")
    proof = models.JSONField(default=dict, blank=True, help_text="What shows it: form fields, confirmation, file")
    at = models.DateTimeField(db_index=False)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # The contact's history (export, the contact page) and "consent in force when a message
            # was sent" (consent/selectors.py): newest first per contact.
            models.Index(fields=["contact", "-at"], name="consent_record_contact_idx"),
            # After erasure, the history by hash.
            models.Index(fields=["email_hash"], name="consent_record_hash_idx"),
        ]

    def __str__(self) -> str:
        scope = f" ({self.topic_id})" if self.topic_id else ""
        return f"{self.status}{scope} via {self.source} at {self.at:%Y-%m-%d %H:%M}"


class OneClickScope(models.TextChoices):
    TOPIC = "topic", "Leave this topic only"
    ALL = "all", "Unsubscribe from all marketing"


class Topic(models.Model):
    """A subscription group marketing email is sent under (a template names its topic)."""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    description = models.CharField(max_length=300, blank=True, help_text="Shown in the preference center")
    one_click_scope = models.CharField(
        max_length=10, choices=OneClickScope.choices, default=OneClickScope.TOPIC,
        help_text="What a one-click unsubscribe (List-Unsubscribe-Post) from an email of this topic does")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(one_click_scope__in=OneClickScope.values),
                                   name="topic_one_click_scope_valid"),
        ]

    def __str__(self) -> str:
        return self.name


class TopicSubscription(models.Model):
    """A contact's choice for one topic. No row: subscribed if the contact has marketing consent."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="topic_subscriptions")
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="subscriptions", db_index=False)
    subscribed = models.BooleanField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["contact", "topic"], name="topic_subscription_unique")]

    def __str__(self) -> str:
        return f"{self.contact_id} {'in' if self.subscribed else 'out of'} {self.topic_id}"


class SignupForm(models.Model):
    """A public signup form: /f/<slug>/ and an embeddable snippet (consent/forms_public.py)."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    fields = models.JSONField(default=list, blank=True,
                              help_text='Contact fields and custom field keys besides email: ["first_name", "plan"]')
    lists = models.ManyToManyField(ContactList, blank=True, related_name="+")
    topics = models.ManyToManyField(Topic, blank=True, related_name="+")
    double_opt_in = models.BooleanField(default=True, help_text="Consent only once the address is confirmed")
    success_message = models.CharField(max_length=500, default="Thank you for signing up.")
    redirect_url = models.URLField(blank=True, help_text="After submitting; must be on a host in FORM_REDIRECT_HOSTS")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class OptInStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    CONFIRMED = "confirmed", "Confirmed"
    EXPIRED = "expired", "Expired"


class OptInRequest(models.Model):
    """A double opt-in confirmation sent to an address: consent is granted only when its signed
    link is followed; reminded once; expires after CONSENT_OPTIN_EXPIRY_DAYS."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="optin_requests")
    form = models.ForeignKey(SignupForm, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                             db_index=False)
    source = models.CharField(max_length=20, choices=ConsentSource.choices, default=ConsentSource.FORM)
    status = models.CharField(max_length=20, choices=OptInStatus.choices, default=OptInStatus.PENDING)
    ip = models.GenericIPAddressField(null=True, blank=True)
    topic_ids = models.JSONField(default=list, blank=True, help_text="Topics to join on confirmation")
    # What a public form asked to change on an existing contact (profile fields, attributes, lists,
    # its form_submitted events): a stranger can type anyone's address, so nothing of it is applied
    # until the address's owner confirms (consent/optin.py).
    changes = models.JSONField(default=dict, blank=True, help_text="Held until confirmation")
    created_at = models.DateTimeField()
    reminded_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=OptInStatus.values), name="optin_status_valid"),
            # One pending request per contact: two submissions at once make one request and one email.
            models.UniqueConstraint(fields=["contact"], condition=models.Q(status="pending"),
                                    name="optin_one_pending_per_contact"),
        ]
        indexes = [
            # The reminder/expiry job (consent/tasks.py optin_sweep): pending requests, oldest first.
            models.Index(fields=["created_at"], name="optin_pending_idx", condition=models.Q(status="pending")),
        ]

    def __str__(self) -> str:
        return f"opt-in #{self.pk} {self.status}"
