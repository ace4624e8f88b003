"""Writes to contacts. Every write path goes through here so normalisation and
validation are the same for the admin, the API, imports and the demo seeder."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from contacts.emails import normalize_email
from contacts.models import Contact

EDITABLE_FIELDS = (
    "first_name",
    "last_name",
    "company",
    "job_title",
    "phone",
    "country",
    "lifecycle_stage",
    "attributes",
    "consent_status",
    "consent_source",
    "consent_at",
    "is_test",
)


@transaction.atomic
def contact_upsert(*, email: str, **fields: Any) -> tuple[Contact, bool]:
    """Create or update the contact with this email. Returns (contact, created)."""
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"unknown contact fields: {', '.join(sorted(unknown))}")
    normalised = normalize_email(email)
    contact = Contact.objects.select_for_update().filter(email=normalised).first()
    created = contact is None
    if contact is None:
        contact = Contact(email=normalised)
    for name, value in fields.items():
        setattr(contact, name, value.strip() if isinstance(value, str) else value)
    contact.country = contact.country.upper()
    contact.full_clean(validate_unique=created)
    contact.save()
    return contact, created
