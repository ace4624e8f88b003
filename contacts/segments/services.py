"""Segment membership: full refresh, incremental update for a few contacts, and saving a segment.

Membership changes are set-based SQL (INSERT ... SELECT / DELETE with RETURNING, both SQLite and
PostgreSQL); every contact that enters or leaves gets a `segment_entered` / `segment_left` Event
(source "system") so scoring and workflow triggers can react to it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.db.models import (
    BooleanField,
    Case,
    ExpressionWrapper,
    F,
    IntegerField,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from config.db_router import replica_broke
from contacts.models import Contact, Event, Segment, SegmentMembership
from contacts.segments.compiler import FilterContext, compile_with, segment_queryset, validate_filter
from contacts.segments.sql import id_set
from core.logs import correlation_for_contact, current_correlation_id
from core.queues import get_queue
from core.utils import chunked

logger = logging.getLogger(__name__)

SEGMENT_ENTERED = "segment_entered"
SEGMENT_LEFT = "segment_left"
EVENT_SOURCE = "system"
CONTACT_CHUNK = 5000  # contacts per incremental query (an event batch has at most 4,000 contacts)
SEGMENT_CHUNK = 40  # segments evaluated per incremental query (one boolean column each)
REFRESH_ERROR_MAX = 2000  # characters of a failed refresh's error kept on the segment
ROW_CHUNK = 1000  # membership rows per INSERT/DELETE statement
REFRESH_JOB = "contacts.segments.tasks.segment_refresh_job"
MATCHING_TABLE = "segment_refresh_matching"  # temporary: one connection's refresh at a time

MEMBERSHIP = SegmentMembership._meta.db_table
EVENT = Event._meta.db_table


# --- Full refresh ------------------------------------------------------------------------------------------


def segment_refresh(*, segment: Segment) -> tuple[int, int]:
    """Recompute the segment's membership from its definition: (entered, left).

    The definition is evaluated once, into a temporary table of matching ids; membership is then
    diffed against it with one INSERT and one DELETE, whatever the segment's size. member_count
    and refreshed_at are updated and each change is recorded as an Event. ValueError if the
    definition is invalid. Whoever calls it (the refresh jobs, an import's follow-up), the outcome
    is left on the segment for the operations page: a failure sets refresh_failed_at and
    refresh_error (then re-raises), a success clears them.
    """
    now = timezone.now()
    try:
        matching = segment_queryset(segment, context=FilterContext(now=now)).order_by()
        matching_ids = matching.annotate(matching_id=F("pk")).values("matching_id")
        with transaction.atomic(), _matching_ids(matching_ids) as table:
            entered = _insert_matching(segment, table, now)
            left = _delete_unmatched(segment, table)
            count = SegmentMembership.objects.filter(segment_id=segment.pk).count()
            Segment.objects.filter(pk=segment.pk).update(member_count=count, refreshed_at=now,
                                                         refresh_failed_at=None, refresh_error="")
            _record_refresh_events(segment, left, now)
    except Exception as exc:
        _refresh_failure_record(segment, exc)
        raise
    segment.member_count, segment.refreshed_at = count, now
    segment.refresh_failed_at, segment.refresh_error = None, ""
    return len(entered), len(left)


def refresh_error_text(exc: BaseException) -> str:
    """What the operations page shows: a definition's problem as is, anything else with its type."""
    text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    return text[:REFRESH_ERROR_MAX]


def _refresh_failure_record(segment: Segment, exc: BaseException) -> None:
    """Runs after the refresh's atomic block rolled back (a savepoint inside a caller's transaction),
    so the connection is usable. Never raises: the refresh's own error is what the caller gets."""
    try:
        Segment.objects.filter(pk=segment.pk).update(refresh_failed_at=timezone.now(),
                                                     refresh_error=refresh_error_text(exc))
    except Exception:
        logger.exception("segment %s: refresh failure not recorded", segment.pk)


@contextmanager
def _matching_ids(matching: QuerySet[Contact, dict[str, Any]]) -> Iterator[str]:
    """A temporary table (id primary key) holding the ids the query matches; dropped afterwards.

    Diffing membership against a materialised set is a plain (hash or index) join both ways; a
    NOT EXISTS over the definition itself re-evaluated the definition for every member."""
    table = MATCHING_TABLE
    select_sql, params = matching.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")
        cursor.execute(f"CREATE TEMPORARY TABLE {table} (id bigint PRIMARY KEY)")
        # "WHERE true": SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT (parsing ambiguity).
        cursor.execute(f"INSERT INTO {table} (id) SELECT m.matching_id FROM ({select_sql}) m WHERE true "  # noqa: S608
                       "ON CONFLICT (id) DO NOTHING", params)
        if connection.vendor == "postgresql":
            cursor.execute(f"ANALYZE {table}")  # autovacuum never analyses temporary tables
    yield table
    # Dropped on success only: after a failed statement PostgreSQL refuses every command until the
    # rollback (a DROP here would replace the real error with "current transaction is aborted"),
    # and the rollback of the caller's atomic block removes the table anyway (DDL is transactional;
    # a leftover is dropped by the next refresh's first statement).
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")


def _insert_matching(segment: Segment, table: str, now: Any) -> list[int]:
    """INSERT ... SELECT the matching contacts that are not members yet; their ids.

    Existing members are skipped by ON CONFLICT alone (one probe of the unique index each). A NOT
    EXISTS over the membership table, planned from statistics taken while the segment was empty,
    became a nested loop that re-scanned the table it was filling: 14.5 s instead of 0.5 s for 50k
    members right after a score recompute."""
    entered_at = SegmentMembership._meta.get_field("entered_at").get_db_prep_value(now, connection)
    sql = (f"INSERT INTO {MEMBERSHIP} (segment_id, contact_id, entered_at) "  # noqa: S608 (table names are constants)
           f"SELECT %s, t.id, %s FROM {table} t WHERE true "  # SQLite: a WHERE before ON CONFLICT
           f"ON CONFLICT (segment_id, contact_id) DO NOTHING RETURNING contact_id")
    with connection.cursor() as cursor:
        cursor.execute(sql, [segment.pk, entered_at])
        return [row[0] for row in cursor.fetchall()]


def _record_refresh_events(segment: Segment, left: Sequence[int], now: Any) -> None:
    """The refresh's segment_entered / segment_left events, without building model instances:
    entered from the memberships this refresh inserted (their entered_at is its `now`) in one
    INSERT ... SELECT, left from the deleted ids in multi-row INSERTs."""
    properties = Event._meta.get_field("properties").get_db_prep_value(
        {"segment_id": segment.pk, "segment": segment.name}, connection)
    stamp = SegmentMembership._meta.get_field("entered_at").get_db_prep_value(now, connection)
    correlation = current_correlation_id()  # the refresh job's (or the admin request's)
    columns = "contact_id, event_type, properties, occurred_at, received_at, source, correlation_id"
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {EVENT} ({columns}) SELECT m.contact_id, %s, %s, %s, %s, %s, %s FROM {MEMBERSHIP} m "  # noqa: S608
            f"WHERE m.segment_id = %s AND m.entered_at = %s ORDER BY m.contact_id",
            [SEGMENT_ENTERED, properties, stamp, stamp, EVENT_SOURCE, correlation, segment.pk, stamp],
        )
        for chunk in chunked(sorted(left), ROW_CHUNK):
            rows = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            cursor.execute(f"INSERT INTO {EVENT} ({columns}) VALUES {rows}",  # noqa: S608
                           [value for cid in chunk for value in (cid, SEGMENT_LEFT, properties, stamp, stamp,
                                                                 EVENT_SOURCE, correlation)])


def _delete_unmatched(segment: Segment, table: str) -> list[int]:
    """DELETE the members the definition no longer matches; their contact ids."""
    sql = (f"DELETE FROM {MEMBERSHIP} WHERE segment_id = %s AND NOT EXISTS ("  # noqa: S608
           f"SELECT 1 FROM {table} t WHERE t.id = {MEMBERSHIP}.contact_id) RETURNING contact_id")
    with connection.cursor() as cursor:
        cursor.execute(sql, [segment.pk])
        return [row[0] for row in cursor.fetchall()]


def segments_refresh_all() -> dict[int, tuple[int, int] | str]:
    """Refresh every active segment (the safety net for time windows like "in the last 7 days",
    which change with the clock and not with an event). One transaction per segment; a segment
    whose definition went invalid (a custom field deleted) or whose query failed in the database
    (a statement timeout, say) is reported and skipped, so one bad segment does not stall the rest."""
    outcome: dict[int, tuple[int, int] | str] = {}
    for segment in Segment.objects.filter(is_active=True).order_by("pk"):
        try:
            outcome[segment.pk] = segment_refresh(segment=segment)  # records a failure on the segment
        except (ValueError, DatabaseError, OverflowError, UnicodeError) as exc:  # what bad parameters raise
            logger.warning("segment %s not refreshed: %s", segment.pk, exc)
            outcome[segment.pk] = refresh_error_text(exc)
    return outcome


# --- Incremental update ------------------------------------------------------------------------------------


def segments_update_contacts(*, contact_ids: Iterable[int]) -> list[Event]:
    """Bring these contacts' memberships of every active segment up to date; the created events.

    Called by the event pipeline after each batch and after contact edits, which score the
    returned events in the same transaction: they are created processed. The number of queries
    depends on the number of active segments (one boolean column each, SEGMENT_CHUNK per query),
    not on the number of contacts (up to CONTACT_CHUNK per round).
    """
    ids = sorted(set(contact_ids))
    if not ids:
        return []
    now = timezone.now()
    context = FilterContext(now=now)
    segments = {s.pk: s for s in Segment.objects.filter(is_active=True).order_by("pk")}
    conditions = {}
    for pk, segment in segments.items():
        try:
            conditions[pk] = compile_with(segment.definition, context=context, segment_id=pk)
        except Exception as exc:  # noqa: BLE001  invalid (a legacy row, a deleted field): skipped, shown
            _live_failure_record(segment, exc)
    if not conditions:
        return []
    # Segments already marked failed are queried one at a time, so one that still fails costs a
    # statement, not its 39 neighbours' shared query (and a fixed one simply matches again).
    suspects = {pk for pk in conditions if segments[pk].refresh_failed_at is not None}
    entered: list[tuple[int, int]] = []
    left: list[tuple[int, int]] = []
    with transaction.atomic():
        for chunk in chunked(ids, CONTACT_CHUNK):
            wanted, failed = _matching_pairs(chunk, conditions, suspects)
            for pk, error in failed.items():  # membership left as it was, not emptied
                del conditions[pk]
                _live_failure_record(segments[pk], error)
            if not conditions:
                break
            current = dict(((s, c), pk) for pk, s, c in SegmentMembership.objects.filter(
                contact_id__in=id_set(chunk), segment_id__in=list(conditions),
            ).values_list("pk", "segment_id", "contact_id"))
            entered += _insert_pairs(sorted(wanted - current.keys()), now)
            left += _delete_memberships(sorted(pk for pair, pk in current.items() if pair not in wanted))
        _adjust_counts(entered, left)
        return _record_events([(segments[s], c, SEGMENT_ENTERED) for s, c in entered]
                              + [(segments[s], c, SEGMENT_LEFT) for s, c in left], now)


def _matching_pairs(contact_ids: Sequence[int], conditions: dict[int, Q],
                    suspects: Collection[int] = ()) -> tuple[set[tuple[int, int]], dict[int, Exception]]:
    """(segment id, contact id) for every condition each contact meets: one query per SEGMENT_CHUNK
    segments, `suspects` one query each; and the segments whose query failed, with the error.

    Each query runs in a savepoint: on PostgreSQL a failed statement aborts the whole transaction,
    which is the event batch's, so one segment's error used to fail every event job (scores,
    workflow triggers, unsubscribes) until it was switched off. A group that fails is retried one
    segment at a time to find the culprit; the others' results stand."""
    pairs: set[tuple[int, int]] = set()
    failed: dict[int, Exception] = {}
    healthy = [pk for pk in conditions if pk not in suspects]
    groups = [*chunked(healthy, SEGMENT_CHUNK), *([pk] for pk in conditions if pk in suspects)]
    for group in groups:
        try:
            pairs |= _group_pairs(contact_ids, group, conditions)
        except Exception as exc:  # noqa: BLE001  a database or parameter error: isolated below
            if len(group) == 1:
                failed[group[0]] = exc
                continue
            for pk in group:
                try:
                    pairs |= _group_pairs(contact_ids, [pk], conditions)
                except Exception as alone:  # noqa: BLE001
                    failed[pk] = alone
    return pairs, failed


def _group_pairs(contact_ids: Sequence[int], group: Sequence[int], conditions: dict[int, Q]) -> set[tuple[int, int]]:
    columns = {f"s{pk}": ExpressionWrapper(conditions[pk], output_field=BooleanField()) for pk in group}
    with transaction.atomic():  # a savepoint, rolled back alone if the statement fails
        rows = list(Contact.objects.filter(pk__in=id_set(contact_ids)).order_by().annotate(**columns).values_list(
            "pk", *columns))
    pairs: set[tuple[int, int]] = set()
    for contact_id, *flags in rows:
        pairs.update((pk, contact_id) for pk, flag in zip(group, flags, strict=True) if flag)
    return pairs


def _live_failure_record(segment: Segment, exc: BaseException) -> None:
    """Mark a segment the incremental update had to skip, with the same fields a failed full refresh
    sets (the operations page and the segment admin show them; the next refresh that succeeds, e.g.
    the one queued when the segment is saved, clears them). Written once, not on every batch: an
    UPDATE per batch would make every event worker queue on this row's lock."""
    logger.warning("segment %s skipped in incremental update: %s", segment.pk, exc)
    if segment.refresh_failed_at is not None:
        return
    segment.refresh_failed_at, segment.refresh_error = timezone.now(), (
        "Live update skipped this segment: " + refresh_error_text(exc))[:REFRESH_ERROR_MAX]
    Segment.objects.filter(pk=segment.pk, refresh_failed_at__isnull=True).update(
        refresh_failed_at=segment.refresh_failed_at, refresh_error=segment.refresh_error)


def _insert_pairs(pairs: Sequence[tuple[int, int]], now: Any) -> list[tuple[int, int]]:
    """Insert memberships; the ones actually inserted (a concurrent update may have won)."""
    inserted: list[tuple[int, int]] = []
    entered_at = SegmentMembership._meta.get_field("entered_at").get_db_prep_value(now, connection)
    for batch in chunked(pairs, ROW_CHUNK):
        rows = ", ".join(["(%s, %s, %s)"] * len(batch))
        sql = (f"INSERT INTO {MEMBERSHIP} (segment_id, contact_id, entered_at) VALUES {rows} "  # noqa: S608
               "ON CONFLICT (segment_id, contact_id) DO NOTHING RETURNING segment_id, contact_id")
        with connection.cursor() as cursor:
            cursor.execute(sql, [value for s, c in batch for value in (s, c, entered_at)])
            inserted += [(row[0], row[1]) for row in cursor.fetchall()]
    return inserted


def _delete_memberships(membership_ids: Sequence[int]) -> list[tuple[int, int]]:
    """Delete memberships by id; the (segment, contact) pairs actually deleted."""
    deleted: list[tuple[int, int]] = []
    for batch in chunked(membership_ids, ROW_CHUNK):
        marks = ", ".join(["%s"] * len(batch))
        sql = f"DELETE FROM {MEMBERSHIP} WHERE id IN ({marks}) RETURNING segment_id, contact_id"  # noqa: S608
        with connection.cursor() as cursor:
            cursor.execute(sql, list(batch))
            deleted += [(row[0], row[1]) for row in cursor.fetchall()]
    return deleted


def _adjust_counts(entered: Sequence[tuple[int, int]], left: Sequence[tuple[int, int]]) -> None:
    """One UPDATE moves every changed segment's member_count by its delta."""
    delta: dict[int, int] = {}
    for segment_id, _ in entered:
        delta[segment_id] = delta.get(segment_id, 0) + 1
    for segment_id, _ in left:
        delta[segment_id] = delta.get(segment_id, 0) - 1
    delta = {pk: d for pk, d in delta.items() if d}
    if delta:
        whens = [When(pk=pk, then=Greatest(F("member_count") + d, Value(0))) for pk, d in delta.items()]
        Segment.objects.filter(pk__in=list(delta)).update(
            member_count=Case(*whens, default=F("member_count"), output_field=IntegerField()))


# --- The editor's live preview --------------------------------------------------------------------------


def segment_preview(*, definition_text: str, segment_id: int | None = None, sample_size: int = 20) -> dict[str, Any]:
    """What the admin editor shows while the marketer types: {count, sample, errors}.

    A read (no membership is written); `definition_text` is the raw JSON of the textarea, so a
    syntax error is reported like any other problem. `segment_id`: the segment being edited
    (its unsaved definition is the one a reference back to it would reach: a cycle).
    """
    try:
        tree = json.loads(definition_text)
    except (ValueError, RecursionError) as exc:  # RecursionError: thousands of nested brackets
        reason = exc if isinstance(exc, ValueError) else "nested too deeply"
        return {"count": None, "sample": [], "errors": [f"not valid JSON: {reason}"]}
    context = FilterContext()
    if segment_id is not None:
        context.set_definition(segment_id, tree)
    try:
        condition = compile_with(tree, context=context, segment_id=segment_id)
    except ValueError:
        return {"count": None, "sample": [], "errors": validate_filter(tree, segment_id=segment_id)}
    matching = Contact.objects.filter(condition)
    sample = matching.order_by("-id").values(  # no ContactScore row: 0
        "email", "first_name", "last_name", score=Coalesce("scorecard__score", 0))[:sample_size]
    try:
        # A savepoint if the caller has a transaction open; on the replica when the caller is marked
        # read-only (config/db_router.py), whose failure is re-raised for replica_reads to retry.
        with transaction.atomic(using=matching.db):
            count, rows = matching.count(), list(sample)
    except (DatabaseError, OverflowError, UnicodeError) as exc:  # a valid tree the database still refused
        if replica_broke(exc):
            raise
        return {"count": None, "sample": [], "errors": [f"the database could not run this filter: {exc}"]}
    return {
        "count": count,
        "sample": [{"email": c["email"], "name": f"{c['first_name']} {c['last_name']}".strip(), "score": c["score"]}
                   for c in rows],
        "errors": [],
    }


# --- Events, saving, queueing ------------------------------------------------------------------------------


def _record_events(changes: list[tuple[Segment, int, str]], now: Any) -> list[Event]:
    """The incremental update's events, created processed: its callers (the event pipeline,
    contacts_changed) score them in the same transaction, so no later UPDATE has to mark them.
    Each carries the correlation id of the change that moved its contact (core.logs.contact_causes,
    else the current request's or job's)."""
    events = [
        Event(contact_id=contact_id, event_type=event_type, occurred_at=now, source=EVENT_SOURCE,
              properties={"segment_id": segment.pk, "segment": segment.name}, processed_at=now,
              correlation_id=correlation_for_contact(contact_id))
        for segment, contact_id, event_type in changes
    ]
    return Event.objects.bulk_create(events, batch_size=500) if events else []


def segment_save(*, segment: Segment) -> Segment:
    """Validate (fields and the filter tree) and save; the refresh is queued for after the commit."""
    segment.full_clean()
    errors = validate_filter(segment.definition, segment_id=segment.pk)
    if errors:
        raise ValidationError({"definition": errors})
    with transaction.atomic():
        segment.save()
        segment_enqueue_refresh(segment_id=segment.pk)
    return segment


def segment_enqueue_refresh(*, segment_id: int) -> None:
    """Queue a full refresh; with django-rq's COMMIT_MODE it leaves when the transaction commits."""
    get_queue("default").enqueue(REFRESH_JOB, segment_id)

