from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower, Trim

from contacts.emails import normalize_email


class LifecycleStage(models.TextChoices):
    SUBSCRIBER = "subscriber", "Subscriber"
    LEAD = "lead", "Lead"
    MQL = "mql", "Marketing qualified lead"
    SQL = "sql", "Sales qualified lead"
    OPPORTUNITY = "opportunity", "Opportunity"
    CUSTOMER = "customer", "Customer"
    OTHER = "other", "Other"


class ConsentStatus(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    GRANTED = "granted", "Granted"
    WITHDRAWN = "withdrawn", "Withdrawn"


class Contact(models.Model):
    # Stored normalised (see contacts.emails); the check constraint keeps raw writes honest.
    email = models.EmailField(max_length=254, unique=True)
    first_name = models.CharField(max_length=150, blank=True)
    last_name = models.CharField(max_length=150, blank=True)
    company = models.CharField(max_length=200, blank=True)
    job_title = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=50, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2 code")
    lifecycle_stage = models.CharField(
        max_length=20, choices=LifecycleStage.choices, default=LifecycleStage.SUBSCRIBER
    )
    attributes = models.JSONField(default=dict, blank=True, help_text="Custom fields, by key")
    consent_status = models.CharField(
        max_length=20, choices=ConsentStatus.choices, default=ConsentStatus.UNKNOWN
    )
    consent_source = models.CharField(max_length=200, blank=True, help_text="Form, import or API that recorded consent")
    consent_at = models.DateTimeField(null=True, blank=True)
    is_test = models.BooleanField(
        default=False, help_text="Part of the test audience that staging workflow versions run for"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(email=Lower(Trim("email"))), name="contact_email_normalised"
            ),
            models.CheckConstraint(
                condition=models.Q(lifecycle_stage__in=LifecycleStage.values), name="contact_lifecycle_stage_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(consent_status__in=ConsentStatus.values), name="contact_consent_status_valid"
            ),
        ]
        indexes = [
            # Admin list default ordering and "new contacts this week" lists.
            models.Index(fields=["-created_at", "-id"], name="contact_created_idx"),
            # Admin filter and sales views by stage.
            models.Index(fields=["lifecycle_stage"], name="contact_stage_idx"),
            # Staging runs select the test audience.
            models.Index(fields=["is_test"], name="contact_is_test_idx", condition=models.Q(is_test=True)),
        ]

    def __str__(self) -> str:
        return self.email

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    def clean(self) -> None:
        super().clean()
        if self.email:
            try:
                self.email = normalize_email(self.email)
            except ValidationError as exc:
                raise ValidationError({"email": exc.messages}) from exc
        if self.country:
            self.country = self.country.strip().upper()
