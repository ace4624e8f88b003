"""Consent at import: the import pipeline writes consent set-based in SQL (contacts/imports), so
the history catches up after the merge, in the same transaction: every contact the import wrote
whose marketing consent differs from its last recorded one gets a row (source "import", the file
and job as proof). Contacts whose change another path already recorded are left alone."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone
from django.utils.dateparse import parse_date

from consent.models import ConsentRecord, ConsentSource
from contacts.emails import suppression_hash
from contacts.models import ConsentStatus, Contact

BATCH = 2000


def consent_basis_check(*, basis: str, source: str, at: str) -> None:
    """A file-level consent basis must say where consent was given (the proof) and, if it says
    when, a real date; a ValueError names what is wrong."""
    if basis not in ("", "granted", "confirm"):
        raise ValueError(f"consent basis {basis!r}: use granted or confirm")
    if basis == "granted" and not source.strip():
        raise ValueError("--consent-basis granted needs --consent-source (where the contacts consented)")
    if at and _basis_moment(at) is None:
        raise ValueError(f"--consent-date {at!r}: use YYYY-MM-DD")


def _basis_moment(at: str) -> dt.datetime | None:
    day = parse_date(at)
    if day is None:
        return None
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _apply_basis(*, since: dt.datetime | Any, job_id: int | None, source_name: str, basis: str,
                 basis_source: str, basis_at: str) -> None:
    """Rows the import left without consent get the file's basis: granted (stated source and date)
    or a double opt-in confirmation email each (consent only when they confirm)."""
    unconsented = Contact.objects.filter(updated_at__gte=since, consent_status=ConsentStatus.UNKNOWN)
    if basis == "granted":
        unconsented.update(consent_status=ConsentStatus.GRANTED, consent_source=basis_source.strip()[:200],
                           consent_at=_basis_moment(basis_at) or timezone.now())
    elif basis == "confirm":
        from consent.optin import optin_start_many

        # Set-based, BATCH contacts per round of INSERTs (no query per contact inside the import's
        # transaction); the confirmation emails are kicked after it commits.
        chunk: list[tuple[int, str, str]] = []
        proof = {"file": source_name[:200], "import_job": job_id}
        actor = f"import #{job_id}" if job_id else "import"
        for row in unconsented.values_list("id", "email", "consent_status").iterator(chunk_size=BATCH):
            chunk.append(row)
            if len(chunk) >= BATCH:
                optin_start_many(contacts=chunk, source=ConsentSource.IMPORT, actor=actor, proof=proof)
                chunk = []
        if chunk:
            optin_start_many(contacts=chunk, source=ConsentSource.IMPORT, actor=actor, proof=proof)


def consent_import_record(*, since: dt.datetime | Any, job_id: int | None, source_name: str, basis: str = "",
                          basis_source: str = "", basis_at: str = "") -> int:
    """Apply the file's consent basis (if any), then record the consent the import at `since` gave
    (or changed); returns how many rows."""
    if basis:
        _apply_basis(since=since, job_id=job_id, source_name=source_name, basis=basis, basis_source=basis_source,
                     basis_at=basis_at)
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
            proof={"file": source_name[:200], "import_job": job_id, "basis": basis or "consent column",
                   "consent_at": consent_at.isoformat() if consent_at else None},
            at=now))
        if len(rows) >= BATCH:
            count += len(ConsentRecord.objects.bulk_create(rows))
            rows = []
    count += len(ConsentRecord.objects.bulk_create(rows))
    return count


def import_marketing_reach(*, final: dict[str, str | None], on_existing: str = "update",
                           basis: str = "") -> dict[str, int]:
    """Of the contacts the whole file writes (email -> the consent its winning row gives, None when
    it gives none), how many will be able to receive marketing email after the import: the consent
    each will have (the merge's rules in contacts/imports/staging.py, then the file's basis) and not
    on the suppression list. One query per BATCH addresses for contacts and suppressions, never
    one per row. Shown before the import runs."""
    from campaigns.models import Suppression  # campaigns imports contacts; consent is below both

    emails = list(final)
    granted = pending = 0
    for start in range(0, len(emails), BATCH):
        chunk = emails[start:start + BATCH]
        known = dict(Contact.objects.filter(email__in=chunk).values_list("email", "consent_status"))
        hashes = {email: suppression_hash(email) for email in chunk}
        listed = set(Suppression.objects.filter(email_hash__in=hashes.values()).values_list("email_hash", flat=True))
        for email in chunk:
            status = _status_after(final[email], known.get(email), on_existing, basis)
            if status == ConsentStatus.UNKNOWN and basis == "confirm" and (
                    email not in known or on_existing != "skip"):
                pending += 1
            if hashes[email] in listed:
                continue  # every suppression reason stops marketing email (campaigns/delivery.py)
            granted += _may_receive(status)
    return {"rows": len(emails), "granted": granted, "confirmations": pending}


def _status_after(from_file: str | None, stored: str | None, on_existing: str, basis: str) -> str:
    if stored is None:  # a new contact
        status = from_file or ConsentStatus.UNKNOWN
    elif on_existing == "skip":
        return stored  # left alone, the basis included (it applies to the contacts the import wrote)
    elif on_existing == "fill-empty":
        status = (from_file or stored) if stored == ConsentStatus.UNKNOWN else stored
    else:
        status = from_file if from_file is not None else stored
    if basis == "granted" and status == ConsentStatus.UNKNOWN:
        return ConsentStatus.GRANTED
    return status


def _may_receive(status: str) -> bool:
    """Delivery's consent rule (campaigns/delivery.py _suppression_reasons)."""
    from django.conf import settings

    if status == ConsentStatus.WITHDRAWN:
        return False
    return status == ConsentStatus.GRANTED or not settings.EMAIL_REQUIRE_CONSENT
