"""Writes of consent: every change of a contact's consent or topic subscription is recorded here,
whichever path made it (API, admin, form, confirmation, import, unsubscribe, complaint)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from consent.models import ConsentRecord, ConsentSource, Topic, TopicSubscription
from contacts.emails import suppression_hash
from contacts.models import Contact

MAX_PROOF_TEXT = 500  # each proof value is cut to this: a record is evidence, not a data store


def _proof(proof: dict[str, Any] | None) -> dict[str, Any]:
    return {str(k)[:64]: (v[:MAX_PROOF_TEXT] if isinstance(v, str) else v) for k, v in (proof or {}).items()}


def consent_record(*, contact: Contact, status: str, source: str, previous_status: str = "", detail: str = "",
                   actor: str = "", ip: str | None = None, form_id: int | None = None,
                   message_id: int | None = None, topic: Topic | None = None,
                   proof: dict[str, Any] | None = None, at: dt.datetime | None = None) -> ConsentRecord:
    """Append one row to the contact's consent history (the change itself is the caller's)."""
    return ConsentRecord.objects.create(
        contact=contact, email_hash=suppression_hash(contact.email), topic=topic, status=status,
        previous_status=previous_status, source=source if source in ConsentSource.values else ConsentSource.OTHER,
        detail=(detail or "")[:200], actor=(actor or "")[:150], ip=ip or None, form_id=form_id,
        message_id=message_id, proof=_proof(proof), at=at or timezone.now())


def consent_records_bulk(*, contacts: Iterable[Contact], status: str, source: str, detail: str = "",
                         actor: str = "", proof: dict[str, Any] | None = None,
                         at: dt.datetime | None = None, previous: dict[int, str] | None = None) -> int:
    """One row per contact in one INSERT (an import: thousands at once)."""
    at = at or timezone.now()
    rows = [ConsentRecord(contact=c, email_hash=suppression_hash(c.email), status=status,
                          previous_status=(previous or {}).get(c.pk, ""), source=source, detail=detail[:200],
                          actor=actor[:150], proof=_proof(proof), at=at) for c in contacts]
    ConsentRecord.objects.bulk_create(rows, batch_size=1000)
    return len(rows)


@transaction.atomic
def consent_set(*, contact: Contact, status: str, source: str, detail: str = "", actor: str = "",
                ip: str | None = None, form_id: int | None = None, message_id: int | None = None,
                proof: dict[str, Any] | None = None) -> bool:
    """Change the contact's marketing consent and record it. Unchanged: nothing written, False."""
    now = timezone.now()
    previous = Contact.objects.filter(pk=contact.pk).values_list("consent_status", flat=True).first()
    if previous is None or previous == status:
        return False
    Contact.objects.filter(pk=contact.pk).update(consent_status=status, consent_source=(detail or source)[:200],
                                                 consent_at=now, updated_at=now)
    contact.consent_status, contact.consent_source, contact.consent_at = status, (detail or source)[:200], now
    consent_record(contact=contact, status=status, previous_status=previous, source=source, detail=detail,
                   actor=actor, ip=ip, form_id=form_id, message_id=message_id, proof=proof, at=now)
    return True


@transaction.atomic
def topic_set(*, contact: Contact, topic: Topic, subscribed: bool, source: str, actor: str = "",
              ip: str | None = None, form_id: int | None = None, message_id: int | None = None,
              proof: dict[str, Any] | None = None) -> bool:
    """Subscribe the contact to a topic or leave it; recorded when it changes. Returns changed."""
    row = TopicSubscription.objects.select_for_update().filter(contact=contact, topic=topic).first()
    if row is not None and row.subscribed == subscribed:
        return False
    previous = "" if row is None else ("subscribed" if row.subscribed else "unsubscribed")
    TopicSubscription.objects.update_or_create(contact=contact, topic=topic, defaults={"subscribed": subscribed})
    consent_record(contact=contact, topic=topic, status="subscribed" if subscribed else "unsubscribed",
                   previous_status=previous, source=source, actor=actor, ip=ip, form_id=form_id,
                   message_id=message_id, proof=proof)
    return True


def consent_change_note(*, contact: Contact, previous_status: str, source: str, actor: str = "",
                        proof: dict[str, Any] | None = None) -> None:
    """A write path changed the contact's consent fields itself (contact_upsert, the admin form):
    record the change if there was one."""
    if previous_status == contact.consent_status:
        return
    consent_record(contact=contact, status=contact.consent_status, previous_status=previous_status,
                   source=source, detail=contact.consent_source, actor=actor, proof=proof,
                   at=contact.consent_at or timezone.now())


def consent_history_export(*, contact: Contact) -> list[dict[str, Any]]:
    """The contact's consent history for a data export (GDPR access request), oldest first."""
    rows = ConsentRecord.objects.filter(contact=contact).select_related("topic").order_by("at", "id")
    return [{"at": r.at.isoformat(), "status": r.status, "previous_status": r.previous_status,
             "topic": r.topic.key if r.topic else None, "source": r.source, "detail": r.detail, "actor": r.actor,
             "ip": r.ip, "form_id": r.form_id, "message_id": r.message_id, "proof": r.proof} for r in rows]


def consent_records_anonymise(*, contact: Contact) -> int:
    """Erasure: keep each record only as the address's hash and what happened when (no contact,
    IP, actor text or proof), so "was consent given, when" stays answerable for that hash."""
    return ConsentRecord.objects.filter(contact=contact).update(contact=None, ip=None, detail="", proof={},
                                                                actor="", message_id=None)
