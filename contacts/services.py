"""Writes to contacts. Every write path goes through here so normalisation and
validation are the same for the admin, the API, imports and the demo seeder."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from contacts.countries import country_code
from contacts.emails import normalize_email
from contacts.models import Contact
from core.audit import audit_record
from core.models import AuditEntry

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
def contact_upsert(*, email: str, consent_via: str = "api", consent_actor: str = "",
                   consent_proof: dict[str, Any] | None = None, **fields: Any) -> tuple[Contact, bool]:
    """Create or update the contact with this email. Returns (contact, created). A change of
    consent_status is recorded in the consent history as `consent_via` (consent/services.py)."""
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"unknown contact fields: {', '.join(sorted(unknown))}")
    normalised = normalize_email(email)
    contact = Contact.objects.select_for_update().filter(email=normalised).first()
    created = contact is None
    if contact is None:
        contact = Contact(email=normalised)
    previous_consent = "" if created else contact.consent_status
    for name, value in fields.items():
        setattr(contact, name, value.strip() if isinstance(value, str) else value)
    # Before full_clean: the field holds 2 characters, and "USA" or "Germany" are fine input.
    try:
        contact.country = country_code(contact.country)
    except ValidationError as exc:
        raise ValidationError({"country": exc.messages}) from exc
    contact.full_clean(validate_unique=created)
    contact.save()
    if created and contact.consent_status == "unknown":
        return contact, created  # nothing was consented to or withdrawn: no history row
    from consent.services import consent_change_note  # consent sits above contacts

    consent_change_note(contact=contact, previous_status=previous_consent, source=consent_via,
                        actor=consent_actor, proof=consent_proof)
    return contact, created


@transaction.atomic
def contact_erase(*, contact: Contact, actor: Any) -> AuditEntry:
    """GDPR erasure: delete the contact and everything that names them; keep an audit entry
    that says an erasure happened, by whom and when, without any personal data."""
    from campaigns.services import suppression_add

    contact_id = contact.pk
    counts = {"tags": contact.tags.count(), "lists": contact.lists.count()}
    # Their messages go with them (CASCADE); a hash of the address stays suppressed, so a later
    # import of the same address is never mailed, without keeping the address itself.
    suppression_add(email=contact.email, reason="erased", source="erasure")
    from consent.services import consent_records_anonymise

    consent_records_anonymise(contact=contact)  # the history stays, as the address's hash only
    # Rows that reference the contact (tag and list memberships now; events, messages, queued
    # workflow steps and CRM sync rows as those apps add them) go with it by CASCADE.
    contact.delete()
    return audit_record(actor=actor, action="contact.erased", target=("contacts.contact", contact_id), data=counts)


def contact_export_data(*, contact: Contact) -> dict[str, Any]:
    """Everything Leadflow holds about one contact, as plain JSON (GDPR access request)."""
    fields = ["email", *EDITABLE_FIELDS]
    data: dict[str, Any] = {name: getattr(contact, name) for name in fields if name not in ("attributes",)}
    for key in ("consent_at",):
        data[key] = data[key].isoformat() if data[key] else None
    data.update(
        id=contact.pk,
        attributes=contact.attributes,
        tags=sorted(contact.tags.values_list("name", flat=True)),
        lists=sorted(contact.lists.values_list("name", flat=True)),
        created_at=contact.created_at.isoformat(),
        updated_at=contact.updated_at.isoformat(),
    )
    from consent.services import consent_history_export

    data["consent_history"] = consent_history_export(contact=contact)
    return {"contact": data, "exported_at": timezone.now().isoformat()}
