"""Field mapping (our contact fields -> CRM properties) and payloads with their hashes, batched."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from contacts.models import Contact
from core.utils import chunked

ATTR_PREFIX = "attributes."
SOURCES = frozenset({"first_name", "last_name", "company", "job_title", "phone", "country", "lifecycle_stage",
                     "consent_status", "score", "grade", "mql_at"})
SCORE_SOURCES = frozenset({"score", "grade"})  # in ContactScore: read with the contacts (with_scores)
CHUNK = 1000  # contacts per query


def validate_mapping(mapping: Any) -> str | None:
    """Why the mapping is unusable, or None."""
    if not isinstance(mapping, dict):
        return 'Use a JSON object: {"our field": "CRM property"}.'
    for source, target in mapping.items():
        if source not in SOURCES and not (source.startswith(ATTR_PREFIX) and len(source) > len(ATTR_PREFIX)):
            return f"{source!r} is not a contact field; use one of {', '.join(sorted(SOURCES))} or attributes.<key>."
        if not isinstance(target, str) or not target.strip():
            return f"{source!r}: the CRM property must be a non-empty string."
        if target == "email":
            return "The email property is always sent; do not map it."
    return None


def mapped_fields(mapping: dict[str, str]) -> set[str]:
    """The Contact columns a mapping reads (email and attributes included)."""
    fields = {"id", "email"}
    for source in mapping:
        fields.add("attributes" if source.startswith(ATTR_PREFIX) else source)
    return fields


def contact_rows(contact_ids: Collection[int], mapping: dict[str, str]) -> QuerySet[Contact, dict[str, Any]]:
    """The contacts' mapped fields as dicts, in one query: score and grade (when mapped) from the
    same query's LEFT JOIN of ContactScore (no row: 0 and ''), never a query per contact."""
    fields = mapped_fields(mapping)
    contacts = Contact.objects.filter(id__in=contact_ids).order_by()
    if fields & SCORE_SOURCES:
        contacts = contacts.with_scores()
    return contacts.values(*sorted(fields))


@dataclass(frozen=True)
class Payload:
    contact_id: int
    email: str
    properties: dict[str, Any]
    hash: str


def _value(row: dict[str, Any], source: str) -> Any:
    if source.startswith(ATTR_PREFIX):
        attrs = row.get("attributes") or {}
        return attrs.get(source[len(ATTR_PREFIX):]) if isinstance(attrs, dict) else None
    value = row[source]
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return value


def build_payload(row: dict[str, Any], mapping: dict[str, str], score_step: int) -> Payload:
    """Properties as the CRM receives them, and a hash that changes only when a sync is due: the score
    counts by `score_step` buckets (a threshold crossing), everything else by value."""
    properties: dict[str, Any] = {"email": row["email"]}
    hashed: dict[str, Any] = {"email": row["email"]}
    for source, target in sorted(mapping.items()):
        value = _value(row, source)
        value = "" if value is None else value
        properties[target] = value
        hashed[target] = value // score_step if source == "score" and score_step and isinstance(value, int) else value
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return Payload(contact_id=row["id"], email=row["email"], properties=properties, hash=digest)


def payloads_for(*, contact_ids: Collection[int], mapping: dict[str, str], score_step: int) -> Iterator[Payload]:
    """One query per CHUNK contacts; contacts that no longer exist are simply absent."""
    for chunk in chunked(sorted(set(contact_ids)), CHUNK):
        for row in contact_rows(chunk, mapping):
            yield build_payload(row, mapping, score_step)
