"""Consent at import: the import pipeline writes consent set-based in SQL (contacts/imports), so
the history catches up after the merge, in the same transaction: every contact the import wrote
whose marketing consent differs from its last recorded one gets a row (source "import", the file
and job as proof). Contacts whose change another path already recorded are left alone."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone

from consent.models import ConsentRecord, ConsentSource
from contacts.emails import suppression_hash
from contacts.models import ConsentStatus, Contact

BATCH = 2000


def consent_import_record(*, since: dt.datetime | Any, job_id: int | None, source_name: str) -> int:
    """Record the consent the import at `since` gave (or changed); returns how many rows."""
    last = ConsentRecord.objects.filter(contact=OuterRef("pk"), topic__isnull=True).order_by("-at", "-id")
    written = (Contact.objects.filter(updated_at__gte=since).exclude(consent_status=ConsentStatus.UNKNOWN)
               .annotate(last_status=Subquery(last.values("status")[:1]))
               .filter(Q(last_status__isnull=True) | ~Q(last_status=F("consent_status")))
               .values_list("id", "email", "consent_status", "consent_source", "consent_at", "last_status"))
    now = timezone.now()
    rows: list[ConsentRecord] = []
    count = 0
    for pk, email, status, detail, consent_at, previous in written.iterator(chunk_size=BATCH):
        rows.append(ConsentRecord(
            contact_id=pk, email_hash=suppression_hash(email), status=status, previous_status=previous or "",
            source=ConsentSource.IMPORT, detail=(detail or "")[:200], actor=f"import #{job_id}" if job_id else "import",
            proof={"file": source_name[:200], "import_job": job_id,
                   "consent_at": consent_at.isoformat() if consent_at else None},
            at=now))
        if len(rows) >= BATCH:
            count += len(ConsentRecord.objects.bulk_create(rows))
            rows = []
    count += len(ConsentRecord.objects.bulk_create(rows))
    return count


def import_preview_marketing(*, staged_rows: list[tuple[Any, ...]], email_slot: int, consent_slot: int,
                             fill_empty: bool = False) -> dict[str, int]:
    """Of the previewed rows that will be written, how many contacts will be able to receive
    marketing email afterwards: the file's consent, else (or, filling only empty fields, when the
    contact has one) the consent the contact already has. Shown before the import runs."""
    emails = [row[email_slot] for row in staged_rows]
    known = dict(Contact.objects.filter(email__in=emails).values_list("email", "consent_status"))
    granted = 0
    for row in staged_rows:
        stored = known.get(row[email_slot], ConsentStatus.UNKNOWN)
        from_file = row[consent_slot]
        keep = stored if (fill_empty and stored != ConsentStatus.UNKNOWN) else None
        granted += (keep or from_file or stored) == ConsentStatus.GRANTED
    return {"rows": len(staged_rows), "granted": granted}
