"""Field mapping (our contact fields -> CRM properties), value mapping (our enumeration values -> the
CRM's), and payloads with their hashes, batched."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models import F, QuerySet, Value
from django.db.models.functions import Coalesce

from contacts.models import Contact
from core.utils import chunked

ATTR_PREFIX = "attributes."
SOURCES = frozenset({"first_name", "last_name", "company", "job_title", "phone", "country", "lifecycle_stage",
                     "consent_status", "score", "grade", "mql_at", "owner_email"})
# The lead owner's address (contacts/owners.py), e.g. mapped to HubSpot's hubspot_owner_id via a value
# mapping, or to a custom owner-email property.
OWNER_SOURCE = "owner_email"
SCORE_SOURCES = frozenset({"score", "grade"})  # in ContactScore: read with the contacts (with_scores)
CHUNK = 1000  # contacts per query

# HubSpot's lifecyclestage takes its internal names, not our labels (knowledge base "Use lifecycle
# stages"; automation/crm/fakes.py). The default value mapping when lifecycle_stage -> lifecyclestage.
HUBSPOT_LIFECYCLE_STAGES = {"subscriber": "subscriber", "lead": "lead", "mql": "marketingqualifiedlead",
                            "sql": "salesqualifiedlead", "opportunity": "opportunity", "customer": "customer",
                            "other": "other"}
HUBSPOT_LIFECYCLE_PROPERTY = "lifecyclestage"


def _choices(source: str) -> list[str] | None:
    """Our values of an enumeration field (None: free text)."""
    from contacts.models import ConsentStatus, LifecycleStage

    return {"lifecycle_stage": list(LifecycleStage.values), "consent_status": list(ConsentStatus.values)}.get(source)


def validate_value_mapping(values: Any, mapping: Any) -> str | None:
    """Why the value mapping is unusable, or None. Keys are mapped fields; each maps our values to the
    CRM's: non-empty strings without surrounding whitespace (HubSpot refuses those for enumerations)."""
    if not isinstance(values, dict):
        return 'Use a JSON object: {"our field": {"our value": "CRM value"}}.'
    for source, table in values.items():
        if not isinstance(mapping, dict) or source not in mapping:
            return f"{source!r} is not in the field mapping; map the field first."
        if not isinstance(table, dict):
            return f'{source!r}: use an object {{"our value": "CRM value"}}.'
        ours = _choices(source)
        for our, theirs in table.items():
            if ours is not None and our not in ours:
                return f"{source!r}: {our!r} is not one of our values ({', '.join(ours)})."
            if not isinstance(theirs, str) or not theirs.strip():
                return f"{source!r}: {our!r} must map to a non-empty string."
            if theirs != theirs.strip():
                return f"{source!r}: {our!r} -> {theirs!r} has leading or trailing whitespace, which the CRM refuses."
    return None


def values_for(*, kind: str, mapping: dict[str, str], values: dict[str, dict[str, str]] | None) -> dict[
        str, dict[str, str]]:
    """The value mapping in force: the connection's, over HubSpot's lifecycle stage names by default."""
    effective = {source: dict(table) for source, table in (values or {}).items() if isinstance(table, dict)}
    if kind == "hubspot" and mapping.get("lifecycle_stage") == HUBSPOT_LIFECYCLE_PROPERTY:
        effective["lifecycle_stage"] = {**HUBSPOT_LIFECYCLE_STAGES, **effective.get("lifecycle_stage", {})}
    return effective


def time_zone_problem(name: str) -> str | None:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not a time zone name such as UTC or America/New_York."
    return None


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
    if OWNER_SOURCE in fields:
        contacts = contacts.annotate(**{OWNER_SOURCE: Coalesce(F("owner__email"), Value(""))})
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


def build_payload(row: dict[str, Any], mapping: dict[str, str], score_step: int,
                  values: dict[str, dict[str, str]] | None = None) -> Payload:
    """Properties as the CRM receives them (enumeration values through `values`), and a hash that
    changes only when a sync is due: the score counts by `score_step` buckets (a threshold
    crossing), everything else by value (a changed value mapping changes it too)."""
    properties: dict[str, Any] = {"email": row["email"]}
    hashed: dict[str, Any] = {"email": row["email"]}
    for source, target in sorted(mapping.items()):
        value = _value(row, source)
        value = "" if value is None else value
        if values and source in values and isinstance(value, str | int | bool):
            value = values[source].get(str(value), value)
        properties[target] = value
        hashed[target] = value // score_step if source == "score" and score_step and isinstance(value, int) else value
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return Payload(contact_id=row["id"], email=row["email"], properties=properties, hash=digest)


def payloads_for(*, contact_ids: Collection[int], mapping: dict[str, str], score_step: int,
                 values: dict[str, dict[str, str]] | None = None) -> Iterator[Payload]:
    """One query per CHUNK contacts; contacts that no longer exist are simply absent."""
    for chunk in chunked(sorted(set(contact_ids)), CHUNK):
        for row in contact_rows(chunk, mapping):
            yield build_payload(row, mapping, score_step, values)
