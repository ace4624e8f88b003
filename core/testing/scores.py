"""Test helper: a contact's cached score and grade, set directly (no ledger entries behind them).

Scores live in contacts.ContactScore (no row: 0 and ''); tests that only need a contact to have a
score, for a segment, the lead view or a workflow condition, set it here.
"""

from __future__ import annotations

from contacts.models import Contact, ContactScore


def score_set(contact: Contact | int, score: int, grade: str = "") -> None:
    contact_id = contact if isinstance(contact, int) else contact.pk
    ContactScore.objects.update_or_create(contact_id=contact_id, defaults={"score": score, "grade": grade})
    if isinstance(contact, Contact):
        contact.score, contact.grade = score, grade
