"""Event ingestion for the API: a whole batch validated in Python, then a constant number of
queries (contacts looked up and created set-wise, events inserted with the idempotency constraint
doing the deduplication), and after COMMIT an `events` job unless one is already waiting
(coalesced: contacts.pipeline.events_kick)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from contacts.emails import InvalidEmail, email_canonical, normalize_email
from contacts.fields import load_specs, validate_attributes
from contacts.models import ApiKey, Contact, Event
from contacts.pipeline import events_kick
from contacts.services import EDITABLE_FIELDS, contact_upsert
from core import tracing
from core.logs import MAX_IDS_PER_GROUP, current_correlation_id
from core.queues import get_queue

log = logging.getLogger(__name__)

MAX_EVENTS = 1000  # items per call, events or contacts
MAX_BODY_BYTES = 1024 * 1024  # per API call; 1,000 typical events fit in a fraction of it
MAX_PROPERTIES_BYTES = 16 * 1024
MAX_PROPERTIES_DEPTH = 32  # nesting of objects and lists; deeper JSON would hit recursion limits when saved
MAX_FUTURE = dt.timedelta(days=1)
# Any time given to the API: far enough from datetime's year 1 and 9999 that converting to UTC
# and the workers' window arithmetic (e.g. a scoring cap's "30 days before") cannot overflow.
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(3000, 1, 1, tzinfo=dt.UTC)
MAX_IDEMPOTENCY_KEY = 200
JOB_CHUNK = 500
EVENT_TYPE_RE = re.compile(r"^[a-z0-9_.:-]{1,100}$")
ITEM_FIELDS = frozenset({"email", "type", "properties", "occurred_at", "idempotency_key"})


@dataclass(frozen=True)
class ItemError:
    index: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "message": self.message}


@dataclass(frozen=True)
class CleanEvent:
    index: int
    email: str
    event_type: str
    properties: dict[str, Any]
    occurred_at: dt.datetime
    idempotency_key: str | None


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    errors: list[ItemError] = field(default_factory=list)
    event_ids: list[int] = field(default_factory=list)
    contacts_created: int = 0


class ItemInvalid(ValueError):
    """One item of a batch is unusable; the message says why, for the API client."""


def event_source(api_key: ApiKey) -> str:
    return f"api:{api_key.name}"


def events_ingest(*, api_key: ApiKey, items: Sequence[Any], now: dt.datetime | None = None,
                  correlation_id: str | None = None) -> IngestResult:
    """Store the valid items of a batch as events (duplicates by idempotency key are skipped).

    The events carry `correlation_id` (default: the request's X-Request-ID, or the current job's),
    and so do the enrollments, messages and CRM rows they cause (docs/architecture.md)."""
    if len(items) > MAX_EVENTS:
        raise ValueError(f"at most {MAX_EVENTS} events per call")
    now = now or timezone.now()
    cid = current_correlation_id() if correlation_id is None else correlation_id
    result = IngestResult()
    cleaned = _clean_items(items, now=now, errors=result.errors)
    with transaction.atomic():
        contact_ids = _contact_ids(api_key, cleaned, result)
        cleaned = [item for item in cleaned if item.email in contact_ids]
        source = event_source(api_key)
        fresh, repeated = _first_of_each_key(cleaned)
        result.event_ids, stored_before = _insert(source, fresh, contact_ids, cid)
        result.accepted = len(result.event_ids)
        result.duplicates = repeated + stored_before
        enqueue_processing(event_ids=result.event_ids, correlation_id=cid)
    result.errors.sort(key=lambda e: e.index)
    log.info("events accepted", extra={"source": source, "accepted": result.accepted,
                                       "duplicates": result.duplicates, "errors": len(result.errors),
                                       "event_ids": result.event_ids[:MAX_IDS_PER_GROUP],
                                       **({"correlation_id": cid} if cid else {})})
    return result


def enqueue_processing(*, event_ids: Sequence[int], correlation_id: str = "") -> None:
    """After COMMIT (at once outside a transaction), make sure a job will process the new events:
    one `events_process_pending` job serves every event committed before it starts, so a stream of
    single-event requests costs a job per batch, not per request. `correlation_id` (the events'
    own) becomes the job's id in the logs when this call enqueues it."""
    if event_ids:
        tracing.remember_cause(correlation_id)  # the worker's spans for these events join this trace
        transaction.on_commit(lambda: events_kick(correlation_id=correlation_id))


# --- Validation (pure Python, no queries) ---------------------------------------------------------


def _clean_items(items: Sequence[Any], *, now: dt.datetime, errors: list[ItemError]) -> list[CleanEvent]:
    cleaned: list[CleanEvent] = []
    for index, item in enumerate(items):
        try:
            cleaned.append(clean_item(index, item, now=now))
        except ItemInvalid as exc:
            errors.append(ItemError(index, str(exc)))
    return cleaned


def clean_item(index: int, item: Any, *, now: dt.datetime) -> CleanEvent:
    if type(item) is dict and ITEM_FIELDS.issuperset(item):
        plain = _clean_plain(index, item, now)
        if plain is not None:
            return plain
    return _clean_item_full(index, item, now=now)


def _clean_plain(index: int, item: dict[str, Any], now: dt.datetime) -> CleanEvent | None:
    """The common item (no occurred_at, flat properties of plain values, a canonical-looking email)
    in a few steps, or None for anything else, which _clean_item_full then checks (and words the
    error of). Gives exactly what _clean_item_full gives; a property test compares the two. The
    full checks were ~half of an API request's Python time for a batch of 50 (issue 18, item 4)."""
    email, event_type = item.get("email"), item.get("type")
    key, properties = item.get("idempotency_key"), item.get("properties")
    if item.get("occurred_at") is not None or type(email) is not str or type(event_type) is not str:
        return None
    if key is not None and (type(key) is not str or not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY
                            or not key.isprintable()):  # printable: no NUL, no lone surrogate
        return None
    if EVENT_TYPE_RE.fullmatch(event_type) is None or "\x00" in email:
        return None
    if properties is None:
        properties = {}
    elif type(properties) is not dict or not _flat_and_small(properties):
        return None
    try:
        canonical = email_canonical(email)  # ASCII without NUL when it succeeds: storable
    except InvalidEmail:
        return None
    return CleanEvent(index, canonical, event_type, properties, now, key)


_PLAIN_NUMBER_CHARS = 24  # repr of any float or of an int below 2**64, as JSON


def _flat_and_small(properties: dict[str, Any]) -> bool:
    """Whether every key and value is ASCII text without NUL, a bool, None, a float or an int below
    2**64, and the object's JSON is certainly within MAX_PROPERTIES_BYTES (an upper bound on its
    size: escaping makes an ASCII character at most 6)."""
    bound = 2
    for name, value in properties.items():
        if type(name) is not str or not name.isascii() or "\x00" in name:
            return False
        bound += 6 * len(name) + 4
        kind = type(value)
        if kind is str:
            if not value.isascii() or "\x00" in value:
                return False
            bound += 6 * len(value) + 2
        elif kind is int:
            if not -(2**64) < value < 2**64:
                return False
            bound += _PLAIN_NUMBER_CHARS
        elif kind is float or kind is bool or value is None:
            bound += _PLAIN_NUMBER_CHARS
        else:
            return False
    return bound <= MAX_PROPERTIES_BYTES


def _clean_item_full(index: int, item: Any, *, now: dt.datetime) -> CleanEvent:
    if not isinstance(item, dict):
        raise ItemInvalid("must be an object")
    if not ITEM_FIELDS.issuperset(item):
        unknown = set(item) - ITEM_FIELDS
        raise ItemInvalid(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    properties = _properties(item.get("properties"))
    # The properties were just checked: walk only the other fields (the same first problem is found).
    check_storable({name: value for name, value in item.items() if name != "properties"})
    return CleanEvent(
        index=index,
        email=_email(item.get("email")),
        event_type=_event_type(item.get("type")),
        properties=properties,
        occurred_at=_occurred_at(item.get("occurred_at"), now=now),
        idempotency_key=_idempotency_key(item.get("idempotency_key")),
    )


def _email(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ItemInvalid("email: required, a string")
    try:
        return normalize_email(value)
    except ValidationError as exc:  # the reason names any invisible character and its position
        raise ItemInvalid(f"email: {value[:100]!r} {' '.join(exc.messages)}") from None


def _event_type(value: Any) -> str:
    if not isinstance(value, str) or not EVENT_TYPE_RE.fullmatch(value):
        raise ItemInvalid("type: required, 1-100 characters of a-z 0-9 _ . : -")
    return value


def _properties(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ItemInvalid("properties: must be a JSON object")
    if _too_deep(value, MAX_PROPERTIES_DEPTH):
        raise ItemInvalid(f"properties: nested more than {MAX_PROPERTIES_DEPTH} levels deep")
    check_storable(value, "properties")  # before the size: a lone surrogate cannot be encoded to measure it
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_PROPERTIES_BYTES:
        raise ItemInvalid(f"properties: {size} bytes serialized; the limit is {MAX_PROPERTIES_BYTES}")
    return value


def _occurred_at(value: Any, *, now: dt.datetime) -> dt.datetime:
    if value is None:
        return now
    moment = parse_moment("occurred_at", value)
    if moment > now + MAX_FUTURE:
        raise ItemInvalid("occurred_at: more than 1 day in the future")
    return moment


def _too_deep(value: Any, limit: int) -> bool:
    """Whether objects/lists nest deeper than `limit` (iterative: no recursion on hostile input)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def parse_moment(name: str, value: Any) -> dt.datetime:
    """An ISO-8601 date and time; without an offset it is UTC (documented)."""
    if not isinstance(value, str):
        raise ItemInvalid(f"{name}: must be an ISO-8601 string, e.g. 2025-01-31T09:30:00Z")
    try:
        moment = parse_datetime(value.strip())
    except ValueError:
        moment = None
    if moment is None:
        raise ItemInvalid(f"{name}: {value[:40]!r} is not an ISO-8601 date and time")
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, dt.UTC)
    # Compared before converting: 0001-01-01T00:00:00+14:00 is a valid string whose UTC is year 0.
    if not EARLIEST <= moment < LATEST:
        raise ItemInvalid(f"{name}: {value[:40]!r} is out of range (1970-01-01T00:00:00Z to year 2999)")
    return moment.astimezone(dt.UTC)


def _idempotency_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY:
        raise ItemInvalid(f"idempotency_key: must be a string of 1-{MAX_IDEMPOTENCY_KEY} characters")
    if not value.isprintable():
        raise ItemInvalid("idempotency_key: must not contain control characters")
    return value


def check_storable(value: Any, path: str = "") -> None:
    """Strings the database cannot store (NUL for PostgreSQL, lone surrogates, which json.loads
    accepts from "\\ud800" but UTF-8 cannot encode) are item errors naming the field here rather
    than database errors later."""
    problem = unstorable(value, path)
    if problem is not None:
        raise ItemInvalid(problem)


def unstorable(value: Any, path: str = "") -> str | None:
    """The first string (value or object key) under `value` that the database cannot store, as
    "<path>: <why>" (path like properties.items[2].name), or None. Iterative: any nesting is safe."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            why = _unstorable_text(node)
            if why:
                return f"{where or 'item'}: {why}"
        elif isinstance(node, dict):
            for key, child in node.items():
                why = _unstorable_text(key)
                if why:
                    return f"{where or 'item'}: a key {why}"
                stack.append((child, f"{where}.{key[:40]}" if where else key[:40]))
        elif isinstance(node, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(node))
    return None


def _unstorable_text(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL characters"
    if text.isascii():  # O(1) in CPython; no surrogate in it
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains invalid unicode (a lone surrogate)"
    return None


# --- Storage (a constant number of queries per batch) ---------------------------------------------


def _contact_ids(api_key: ApiKey, items: Iterable[CleanEvent], result: IngestResult) -> dict[str, int]:
    """email -> contact id for every item's contact, creating the unknown ones if the key may."""
    items = list(items)
    emails = {item.email for item in items}
    found = _contact_ids_of(emails)
    missing = emails - set(found)
    if not missing:
        return found
    refusal = _creation_refusal(api_key)
    if refusal is None:
        Contact.objects.bulk_create([Contact(email=email) for email in sorted(missing)], ignore_conflicts=True)
        created = _contact_ids_of(missing)
        result.contacts_created = len(created)  # a concurrent request may have created some: close enough
        found.update(created)
    else:
        result.errors.extend(ItemError(item.index, refusal) for item in items if item.email in missing)
    return found


def _contact_ids_of(emails: set[str]) -> dict[str, int]:
    """email -> id of the contacts among `emails`, in one plain statement: the ORM's version (a
    quoted IN list and the model's ORDER BY) was a fifth of a batch's Python time (issue 18, item 4).
    The emails go as one JSON parameter, and on PostgreSQL as an array the planner probes the
    email index with, whatever its row estimate for a table that just grew."""
    if not emails:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_CONTACT_IDS_SQL[connection.vendor], [json.dumps(sorted(emails))])
        return dict(cursor.fetchall())


_CONTACT_IDS_SQL = {
    "postgresql": f"SELECT email, id FROM {Contact._meta.db_table}"  # noqa: S608 (constant; values are parameters)
                  " WHERE email = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)))",
    "sqlite": f"SELECT email, id FROM {Contact._meta.db_table}"  # noqa: S608 (constant; values are parameters)
              " WHERE email IN (SELECT value FROM json_each(%s))",
}


def _creation_refusal(api_key: ApiKey) -> str | None:
    """Why contacts cannot be created for unknown emails, or None when they can."""
    if not api_key.create_unknown_contacts:
        return "email: no contact with this email (this API key does not create contacts)"
    try:
        validate_attributes({}, creating=True, specs=load_specs())
    except ValidationError as exc:
        return "email: no contact with this email, and new contacts need " + "; ".join(exc.messages)
    return None


def _first_of_each_key(items: list[CleanEvent]) -> tuple[list[CleanEvent], int]:
    """The items without a repeat of a key earlier in the batch, and how many repeats there were."""
    seen: set[str] = set()
    fresh: list[CleanEvent] = []
    for item in items:
        if item.idempotency_key is not None:
            if item.idempotency_key in seen:
                continue
            seen.add(item.idempotency_key)
        fresh.append(item)
    return fresh, len(items) - len(fresh)


def _insert(source: str, items: list[CleanEvent], contact_ids: dict[str, int],
            correlation_id: str) -> tuple[list[int], int]:
    """Insert the batch in one statement; return the new events' ids and how many keyed items were
    skipped because this source already stored their key.

    `INSERT ... SELECT FROM <the batch as one JSON parameter> ON CONFLICT DO NOTHING RETURNING id`:
    the (source, idempotency_key) constraint does the deduplication (keys sent before, and a
    concurrent request's: PostgreSQL makes the second wait for the first to commit, then skips the
    row), and only rows actually inserted come back. Before, a keyed batch cost a SELECT of the
    stored keys, the INSERT, and a SELECT of the ids by key (a third of a request's time). Keyed rows
    go in key order, so two requests sharing keys take their locks in the same order (no deadlock).
    """
    if not items:
        return [], 0
    adapt = connection.ops.adapt_datetimefield_value
    # Each distinct time adapted once (most items of a batch share "now"), as the text json.dumps'
    # default=str would write: the per-item call through the connection proxy was ~5 % of a request.
    moments = {moment: str(adapt(moment)) for moment in {item.occurred_at for item in items}}
    rows = [[contact_ids[item.email], item.event_type, item.properties, moments[item.occurred_at],
             item.idempotency_key]
            for item in sorted(items, key=lambda item: (item.idempotency_key is None, item.idempotency_key or ""))]
    keyed = sum(1 for row in rows if row[4] is not None)
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_SQL[connection.vendor],  # received_at: the wall clock, like auto_now_add
                       [connection.ops.adapt_datetimefield_value(timezone.now()), source, correlation_id,
                        json.dumps(rows, default=str, ensure_ascii=False)])
        inserted = cursor.fetchall()
    ids = sorted(row[0] for row in inserted)
    # The key itself, not `idempotency_key IS NOT NULL`: SQLite 3.40 answered that with 1 for NULL
    # keys in RETURNING (the same expression as the partial unique index's condition).
    return ids, keyed - sum(1 for row in inserted if row[1] is not None)


_EVENT_COLUMNS = ("contact_id, event_type, properties, occurred_at, received_at, source, idempotency_key, processed_at,"
                  " correlation_id")
_INSERT_SQL = {
    # One row per element of the batch array: [contact_id, type, properties, occurred_at, key].
    "postgresql": (
        f"INSERT INTO {Event._meta.db_table} ({_EVENT_COLUMNS})"  # noqa: S608 (constants; values are parameters)
        " SELECT (r->>0)::bigint, r->>1, r->2, (r->>3)::timestamptz, %s, %s, r->>4, NULL, %s"
        " FROM jsonb_array_elements(%s::jsonb) AS r ORDER BY r->>4"
        " ON CONFLICT DO NOTHING RETURNING id, idempotency_key"
    ),
    # SQLite stores JSONField values as JSON text; json(...) writes the object back as text.
    "sqlite": (
        f"INSERT INTO {Event._meta.db_table} ({_EVENT_COLUMNS})"  # noqa: S608 (constants; values are parameters)
        " SELECT json_extract(r.value, '$[0]'), json_extract(r.value, '$[1]'), json(json_extract(r.value, '$[2]')),"
        " json_extract(r.value, '$[3]'), %s, %s, json_extract(r.value, '$[4]'), NULL, %s"
        " FROM json_each(%s) AS r WHERE true ORDER BY r.key"
        " ON CONFLICT DO NOTHING RETURNING id, idempotency_key"
    ),
}


# --- Contacts (API upsert) ------------------------------------------------------------------------

CONTACT_FIELDS = frozenset(EDITABLE_FIELDS) - {"is_test"}  # the test audience is chosen by staff
CHANGED_JOB = "contacts.tasks_events.contacts_changed"


@dataclass
class UpsertResult:
    created: int = 0
    updated: int = 0
    errors: list[ItemError] = field(default_factory=list)
    contact_ids: list[int] = field(default_factory=list)


def contacts_upsert(*, items: Sequence[Any]) -> UpsertResult:
    """Create or update each valid item through contact_upsert (same validation as the admin);
    `attributes` are merged into the stored ones (null removes one). One job re-scores and
    re-segments the written contacts after COMMIT."""
    if len(items) > MAX_EVENTS:
        raise ValueError(f"at most {MAX_EVENTS} contacts per call")
    result = UpsertResult()
    cleaned: list[tuple[int, str, dict[str, Any]]] = []
    for index, item in enumerate(items):
        try:
            cleaned.append((index, *_clean_contact(item)))
        except ItemInvalid as exc:
            result.errors.append(ItemError(index, str(exc)))
    with transaction.atomic():
        stored = dict(Contact.objects.filter(email__in={email for _, email, _ in cleaned}).values_list(
            "email", "attributes"))
        for index, email, fields in cleaned:
            if isinstance(fields.get("attributes"), dict):
                fields["attributes"] = {**stored.get(email, {}), **fields["attributes"]}
            try:
                contact, created = contact_upsert(email=email, **fields)
            except ValidationError as exc:
                result.errors.append(ItemError(index, _validation_message(exc)))
                continue
            stored[email] = contact.attributes
            result.created += created
            result.updated += not created
            result.contact_ids.append(contact.pk)
        ids = sorted(set(result.contact_ids))
        queue = get_queue("events")
        for start in range(0, len(ids), JOB_CHUNK):
            queue.enqueue(CHANGED_JOB, ids[start:start + JOB_CHUNK])
    result.errors.sort(key=lambda e: e.index)
    return result


def _clean_contact(item: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(item, dict):
        raise ItemInvalid("must be an object")
    unknown = set(item) - CONTACT_FIELDS - {"email"}
    if unknown:
        raise ItemInvalid(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    if isinstance(item.get("attributes"), dict) and _too_deep(item["attributes"], MAX_PROPERTIES_DEPTH):
        raise ItemInvalid(f"attributes: nested more than {MAX_PROPERTIES_DEPTH} levels deep")
    check_storable(item)
    fields = {name: value for name, value in item.items() if name != "email"}
    for name, value in fields.items():
        if name == "attributes":
            if not isinstance(value, dict):
                raise ItemInvalid("attributes: must be an object of custom field values")
        elif name == "consent_at":
            fields[name] = None if value is None else parse_moment(name, value)
        elif not isinstance(value, str):
            raise ItemInvalid(f"{name}: must be a string")
    return _email(item.get("email")), fields


def _validation_message(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{name}: {' '.join(messages)}" for name, messages in exc.message_dict.items())
    return " ".join(exc.messages)
