"""Scoring services: the ledger (ScoreEntry) is the truth; ContactScore (score, grade) and Contact.mql_at
are its cache.

Entry points (all set-based per call; see docs/scoring.md):
- score_events(events=...)      behaviour rules for a batch of events (the event pipeline calls it)
- score_fit(contact_ids=...)    fit rules for edited contacts (enter: +points, leave: a reversing entry)
- scores_decay()                daily: refresh cached scores of contacts holding decaying entries
- recompute_job_create/run      after a rule edit: rebuild the changed rules' ledger, then every score
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max, Min, QuerySet, Sum, Window
from django.db.models.expressions import RawSQL
from django.db.models.functions import RowNumber
from django.utils import timezone

from contacts.models import Contact, ContactScore, Event, LifecycleStage
from contacts.segments.sql import id_set, id_set_sql
from core import tracing
from core.audit import audit_record
from core.logs import correlation_for_contact
from core.queues import get_queue
from core.utils import chunked
from scoring.models import GradeBand, RecomputeJob, RuleKind, ScoreEntry, ScoringRule
from scoring.sql import effective_points_sql, epoch_bucket_sql, now_param, rounded_sql

logger = logging.getLogger(__name__)

CHUNK = 2000  # ids per statement: far under SQLite's variable limit, small enough for quick UPDATEs
MQL_EVENT = "became_mql"
MQL_STAGES_FROM = (LifecycleStage.SUBSCRIBER, LifecycleStage.LEAD)
CONTACT_TABLE = Contact._meta.db_table
ENTRY_TABLE = ScoreEntry._meta.db_table
SCORE_TABLE = ContactScore._meta.db_table
EVENT_TABLE = Event._meta.db_table



# --- Behaviour rules --------------------------------------------------------------------------------


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _event_matches(rule: ScoringRule, event: Event) -> bool:
    if event.event_type != rule.event_type:
        return False
    props = event.properties if isinstance(event.properties, dict) else {}
    return all(key in props and _json_equal(props[key], value) for key, value in (rule.property_filters or {}).items())


@dataclass
class _Window:
    """A contact's raw points for one capped rule, to check a rolling window before adding more."""

    entries: list[tuple[dt.datetime, int]]

    def total(self, at: dt.datetime, days: int) -> int:
        start = at - dt.timedelta(days=days)
        return sum(points for created, points in self.entries if start < created <= at)


def _within_cap(rule: ScoringRule, window: _Window, at: dt.datetime) -> bool:
    if rule.cap_points is None or not rule.cap_window_days:
        return True
    return abs(window.total(at, rule.cap_window_days) + rule.points) <= abs(rule.cap_points)


def _held_windows(rule: ScoringRule, candidates: Sequence[Event]) -> dict[int, _Window]:
    """What the ledger already holds for a capped rule in the batch's windows: one query per rule."""
    windows: dict[int, _Window] = defaultdict(lambda: _Window([]))
    if rule.cap_points is None or not rule.cap_window_days:
        return windows
    since = min(ev.occurred_at for ev in candidates) - dt.timedelta(days=rule.cap_window_days)
    rows = ScoreEntry.objects.filter(
        rule=rule, contact_id__in=id_set({ev.contact_id for ev in candidates}), created_at__gt=since,
    ).values_list("contact_id", "created_at", "points")
    for contact_id, created, points in rows:
        windows[contact_id].entries.append((created, points))
    return windows


def _behaviour_entries(rule: ScoringRule, events: Sequence[Event], scored: set[tuple[int, int]]) -> list[ScoreEntry]:
    """Ledger rows one behaviour rule earns from a batch (not yet saved)."""
    candidates = sorted(
        (ev for ev in events if (rule.pk, ev.pk) not in scored and _event_matches(rule, ev)),
        key=lambda ev: (ev.occurred_at, ev.pk),
    )
    if not candidates:
        return []
    done: set[int] = set()
    if not rule.repeatable:  # once per contact, ever
        done = set(ScoreEntry.objects.filter(
            rule=rule, contact_id__in=id_set({ev.contact_id for ev in candidates}),
        ).values_list("contact_id", flat=True).distinct())
    windows = _held_windows(rule, candidates)
    entries = []
    for ev in candidates:
        if ev.contact_id in done or not _within_cap(rule, windows[ev.contact_id], ev.occurred_at):
            continue
        if not rule.repeatable:
            done.add(ev.contact_id)
        windows[ev.contact_id].entries.append((ev.occurred_at, rule.points))
        entries.append(ScoreEntry(
            contact_id=ev.contact_id, rule=rule, rule_name=rule.name, event=ev, points=rule.points,
            half_life_days=rule.half_life_days, reason="", created_at=ev.occurred_at,  # see ScoreEntry.explanation
        ))
    return entries


def score_events(*, events: Sequence[Event], now: dt.datetime | None = None) -> set[int]:
    """Apply the active behaviour rules to a batch of events; return the contacts whose score changed.

    Idempotent: an event scores once per rule (unique (rule, event), inserted with ignore_conflicts),
    so a batch processed twice, or concurrently, changes nothing the second time. Entries are dated
    by the event's occurred_at (decay and caps count from when it happened).
    """
    now = now or timezone.now()
    events = [ev for ev in events if ev.pk is not None]
    types = {ev.event_type for ev in events}
    rules = list(ScoringRule.objects.filter(kind=RuleKind.BEHAVIOUR, is_active=True, event_type__in=types))
    if not rules:
        return set()
    scored = set(ScoreEntry.objects.filter(  # the contacts lead the ledger's (contact, rule, event) index
        contact_id__in=id_set({ev.contact_id for ev in events}), rule__in=rules,
        event_id__in=id_set([ev.pk for ev in events]),
    ).values_list("rule_id", "event_id"))
    by_type: dict[str, list[Event]] = defaultdict(list)  # each rule looks only at its own type's events
    for ev in events:
        by_type[ev.event_type].append(ev)
    entries = [entry for rule in rules for entry in _behaviour_entries(rule, by_type[rule.event_type], scored)]
    if not entries:
        return set()
    with transaction.atomic():
        ScoreEntry.objects.bulk_create(entries, ignore_conflicts=True)
        return scores_refresh(contact_ids={entry.contact_id for entry in entries}, now=now)


# --- Fit rules --------------------------------------------------------------------------------------


def _fit_entries(rules: Sequence[ScoringRule], contact_ids: list[int], now: dt.datetime) -> list[ScoreEntry]:
    """Entries that make each contact hold exactly rule.points while it matches, and 0 otherwise."""
    from contacts.segments.compiler import compile_filter

    held: dict[tuple[int, int], int] = {
        (row["rule_id"], row["contact_id"]): row["total"]
        for row in ScoreEntry.objects.filter(rule__in=rules, contact_id__in=contact_ids)
        .values("rule_id", "contact_id").annotate(total=Sum("points"))
    }
    entries = []
    for rule in rules:
        matching = set(
            Contact.objects.filter(id__in=contact_ids).filter(compile_filter(rule.conditions, now=now))
            .values_list("id", flat=True)
        )
        for contact_id in contact_ids:
            has = held.get((rule.pk, contact_id), 0)
            wanted = rule.points if contact_id in matching else 0
            if has == wanted:
                continue
            if wanted == 0:
                reason = "no longer matches: reversed"
            elif has == 0:
                reason = "matches the conditions"
            else:
                reason = f"rule points changed from {has} to {wanted}"
            entries.append(ScoreEntry(
                contact_id=contact_id, rule=rule, rule_name=rule.name, event=None, points=wanted - has,
                half_life_days=None, reason=reason, created_at=now,
            ))
    return entries


def score_fit(*, contact_ids: Collection[int], now: dt.datetime | None = None) -> set[int]:
    """Apply the active fit rules to these contacts; return the contacts whose score changed.

    A matching contact holds the rule's points once; one that stops matching gets a reversing
    entry, so the ledger always explains the score. Fit entries never decay.
    """
    now = now or timezone.now()
    rules = list(ScoringRule.objects.filter(kind=RuleKind.FIT, is_active=True))
    changed: set[int] = set()
    if not rules:
        return changed
    for chunk in chunked(sorted(set(contact_ids)), CHUNK):
        entries = _fit_entries(rules, chunk, now)
        if not entries:
            continue
        with transaction.atomic():
            ScoreEntry.objects.bulk_create(entries)
            changed |= scores_refresh(contact_ids={entry.contact_id for entry in entries}, now=now)
    return changed


# --- Cached score, grade and MQL -------------------------------------------------------------------


def _scores_write(scope: str, scope_params: Sequence[Any], now: dt.datetime, *, bulk: bool = False,
                  returning: bool = True) -> tuple[int, list[int]]:
    """Cached score and grade of the contacts in scope, from the ledger, in one statement; returns
    how many rows changed and (`returning`) their contact ids. `bulk` (the recompute's id ranges,
    the daily decay): a larger work_mem, for this transaction only, as the live path's batch
    transaction would keep it for everything after.

    `scope` is a condition on the column named `{id}` with `scope_params` for its placeholders
    (an id list, an id range, a subquery). The scope's entries are aggregated once and LEFT JOINed
    to its contacts (no entries: 0), then upserted into ContactScore where they differ from the row
    held (no row: 0 and ''), so a contact that never scored gets no row. (UPSERT ... RETURNING:
    PostgreSQL, SQLite >= 3.35; the SELECT's WHERE lets SQLite parse the ON CONFLICT.)"""
    total = rounded_sql(f"SUM({effective_points_sql('e')})")
    grade_sql, grade_params = _grade_case_sql("n.new_score")
    sql = (  # table names are model constants; values are parameters
        f"INSERT INTO {SCORE_TABLE} (contact_id, score, grade)"  # noqa: S608
        f" SELECT n.cid, n.new_score, {grade_sql} FROM ("
        f"  SELECT c.id AS cid, COALESCE(a.total, 0) AS new_score, s.contact_id AS held, s.score AS old_score,"
        f"   s.grade AS old_grade"
        f"  FROM {CONTACT_TABLE} c LEFT JOIN ("
        f"   SELECT e.contact_id, {total} AS total FROM {ENTRY_TABLE} e"
        f"   WHERE {scope.format(id='e.contact_id')} GROUP BY e.contact_id) a ON a.contact_id = c.id"
        f"  LEFT JOIN {SCORE_TABLE} s ON s.contact_id = c.id"
        f"  WHERE {scope.format(id='c.id')}) n"
        f" WHERE CASE WHEN n.held IS NULL THEN n.new_score <> 0 OR {grade_sql} <> ''"
        f"  ELSE n.old_score <> n.new_score OR n.old_grade <> {grade_sql} END"
        f" ORDER BY n.cid"  # the primary key fills in order, not at random places
        f" ON CONFLICT (contact_id) DO UPDATE SET score = excluded.score, grade = excluded.grade"
        f" WHERE {SCORE_TABLE}.score <> excluded.score OR {SCORE_TABLE}.grade <> excluded.grade"
        + (" RETURNING contact_id" if returning else "")
    )
    params = [*grade_params, now_param(now), *scope_params, *scope_params, *grade_params, *grade_params]
    with connection.cursor() as cursor:
        if bulk and connection.vendor == "postgresql":  # not on the live path: it would last the batch
            cursor.execute("SET LOCAL work_mem = '256MB'")  # the aggregate's hash table stays in memory
        cursor.execute(sql, params)
        ids = [row[0] for row in cursor.fetchall()] if returning else []
        return (len(ids) if returning else cursor.rowcount), ids


def _grade_case_sql(expression: str) -> tuple[str, list[Any]]:
    """SQL for the grade a score expression reaches: the band with the highest min_score (or '')."""
    bands = list(GradeBand.objects.order_by("-min_score").values_list("min_score", "grade"))
    if not bands:
        return "''", []
    whens = " ".join(f"WHEN {expression} >= %s THEN %s" for _ in bands)
    return f"(CASE {whens} ELSE '' END)", [value for band in bands for value in band]


def _id_ranges(parts: int) -> list[tuple[int, int]]:
    """The contacts' id span cut into `parts` ranges of about equal width (ids are dense enough)."""
    low, high = Contact.objects.aggregate(low=Min("id"), high=Max("id")).values()
    if low is None or high is None:
        return []
    step = max(1, -(-(high - low + 1) // parts))
    return [(start, min(start + step - 1, high)) for start in range(low, high + 1, step)]


T = TypeVar("T")


def _connections() -> int:
    """Connections a full recompute may use at once: PostgreSQL only, and only outside a transaction
    (another connection would not see its uncommitted rows, nor could they be rolled back together)."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return 1
    return settings.SCORING_RECOMPUTE_CONNECTIONS


def _side_by_side(tasks: Sequence[Callable[[], T]], workers: int) -> list[T]:
    """Run the tasks on up to `workers` threads, each with its own database connection (closed after)."""
    if workers <= 1 or len(tasks) <= 1:
        return [task() for task in tasks]

    def run(context: contextvars.Context, task: Callable[[], T]) -> T:
        try:
            return context.run(task)  # the caller's context: log lines keep the job's correlation id
        finally:
            connection.close()  # this thread's connection; the caller's stays open

    contexts = [contextvars.copy_context() for _ in tasks]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recompute") as pool:
        return list(pool.map(run, contexts, tasks))


def _mql_threshold() -> int | None:
    return GradeBand.objects.filter(is_mql=True).aggregate(low=Min("min_score"))["low"]


def _mql_update(contact_ids: list[int], now: dt.datetime) -> set[int]:
    """First time a contact reaches an MQL band: mql_at, stage, audit entry and a became_mql event."""
    threshold = _mql_threshold()
    if threshold is None:
        return set()
    crossing = Contact.objects.filter(id__in=id_set(contact_ids), mql_at__isnull=True,
                                      scorecard__score__gte=threshold)
    candidates = list(crossing.values_list("id", flat=True))
    if not candidates:
        return set()
    Contact.objects.filter(id__in=candidates, mql_at__isnull=True).update(mql_at=now)  # claim
    became = list(Contact.objects.filter(id__in=candidates, mql_at=now)
                  .values_list("id", "scorecard__score", "scorecard__grade"))
    ids = [row[0] for row in became]
    Contact.objects.filter(id__in=ids, lifecycle_stage__in=MQL_STAGES_FROM).update(lifecycle_stage=LifecycleStage.MQL)
    Event.objects.bulk_create([
        Event(contact_id=cid, event_type=MQL_EVENT, properties={"score": score, "grade": grade}, occurred_at=now,
              source="system", idempotency_key=f"{MQL_EVENT}:{cid}",
              correlation_id=correlation_for_contact(cid))  # the event that lifted the score, if any
        for cid, score, grade in became
    ], ignore_conflicts=True)
    if became:
        # A job processes these events after COMMIT (workflows triggered on becoming an MQL):
        # created inside a batch, they would otherwise wait for the next unrelated event's job or
        # the sweeper (minutes, and at the end of a burst there is no next event).
        from contacts.pipeline import events_kick
        transaction.on_commit(events_kick)
    for cid, score, grade in became:
        audit_record(actor="scoring", action="contact.became_mql", target=("contacts.contact", cid),
                     data={"score": score, "grade": grade, "threshold": threshold})
    return set(ids)


def scores_refresh(*, contact_ids: Collection[int], now: dt.datetime | None = None) -> set[int]:
    """Recompute these contacts' cached scores and grades from the ledger, then MQL; return changed ids."""
    now = now or timezone.now()
    changed: set[int] = set()
    for chunk in chunked(sorted(set(contact_ids)), CHUNK):
        ids_sql, ids_params = id_set_sql(chunk)
        changed.update(_scores_write(f"{{id}} IN ({ids_sql})", ids_params, now)[1])
    _after_score_change(changed, now)
    return changed


def _after_score_change(changed: Collection[int], now: dt.datetime) -> None:
    for chunk in chunked(sorted(changed), CHUNK):
        _mql_update(chunk, now)
    from automation.crm.services import crm_contacts_changed  # CRM sync: score step, grade or MQL changed
    crm_contacts_changed(contact_ids=changed, reason="score")


def scores_decay(*, now: dt.datetime | None = None) -> int:
    """Daily: refresh the cached score of every contact holding decaying entries; return how many changed.

    One upsert over those contacts (score and grade); MQL follows for the changed ones in chunks.
    """
    now = now or timezone.now()
    scope = f"{{id}} IN (SELECT contact_id FROM {ENTRY_TABLE} WHERE half_life_days IS NOT NULL)"  # noqa: S608
    with transaction.atomic():
        changed = set(_scores_write(scope, [], now, bulk=True)[1])
        _after_score_change(changed, now)
    logger.info("scores_decay: %d contact scores changed", len(changed))
    return len(changed)


# --- Recompute after rule edits --------------------------------------------------------------------


def _queryset_sql(qs: QuerySet[Any]) -> tuple[str, tuple[Any, ...]]:
    sql, params = qs.query.sql_with_params()
    return sql, tuple(params)


@dataclass(frozen=True)
class LedgerDiff:
    """What a rule's rebuild wrote: entries added, changed in place and removed (all 0: untouched)."""

    added: int = 0
    changed: int = 0
    removed: int = 0

    def __add__(self, other: LedgerDiff) -> LedgerDiff:
        return LedgerDiff(self.added + other.added, self.changed + other.changed, self.removed + other.removed)


def _behaviour_rows_sql(rule: ScoringRule) -> tuple[str, list[Any]] | None:
    """SELECT contact_id, event_id, created_at of the entries the rule gives, from all matching events
    (None: it gives none).

    Non-repeatable: the first event per contact. Caps are approximate here: windows are fixed
    buckets of cap_window_days counted from 1970 (live scoring uses exact rolling windows), and a
    bucket keeps its first abs(cap_points) // abs(points) events. The events are read once (the
    type and property filters and the ROW_NUMBER() in one SELECT, served by event_type_time_contact_idx);
    every entry keeps its event, so the ledger still says which event earned which points.
    """
    matching = Event.objects.filter(event_type=rule.event_type)
    for key, value in (rule.property_filters or {}).items():
        matching = matching.filter(**{f"properties__{key}": value})
    limit: int | None = None if rule.repeatable else 1
    partition: list[Any] = [F("contact_id")]
    if rule.cap_points is not None and rule.cap_window_days:
        per_window = abs(rule.cap_points) // abs(rule.points) if rule.points else 0
        limit = per_window if limit is None else min(limit, per_window)
        if rule.repeatable:
            column = f"{connection.ops.quote_name(EVENT_TABLE)}.{connection.ops.quote_name('occurred_at')}"
            partition.append(RawSQL(epoch_bucket_sql(column), (rule.cap_window_days * 86400,)))  # noqa: S611 (constant SQL)
    if limit == 0:
        return None
    rows: QuerySet[Any, Any] = matching.order_by().values("id", "contact_id", "occurred_at")
    if limit is not None:
        rows = rows.annotate(rn=Window(RowNumber(), partition_by=partition, order_by=[F("occurred_at"), F("id")]))
    rows_sql, rows_params = _queryset_sql(rows)
    sql = (f"SELECT t.contact_id, t.id AS event_id, t.occurred_at AS created_at FROM ({rows_sql}) t"  # noqa: S608
           + (" WHERE t.rn <= %s" if limit is not None else ""))
    return sql, [*rows_params, *([limit] if limit is not None else [])]


def _wanted_sql(rule: ScoringRule) -> tuple[str, list[Any]]:
    """The entries a behaviour rule should hold (none when inactive or when its cap admits nothing)."""
    wanted = _behaviour_rows_sql(rule) if rule.is_active and rule.event_type else None
    return wanted or (f"SELECT contact_id, event_id, created_at FROM {ENTRY_TABLE} WHERE 1 = 0", [])  # noqa: S608


def _wanted_union_sql(rules: Sequence[ScoringRule]) -> tuple[str, list[Any]]:
    """The entries a group of behaviour rules should hold: rule_id, rule_name, points,
    half_life_days, contact_id, event_id, created_at (PostgreSQL)."""
    typed = ("SELECT NULL::bigint AS rule_id, NULL::varchar AS rule_name, NULL::integer AS points,"
             " NULL::integer AS half_life_days, NULL::bigint AS contact_id, NULL::bigint AS event_id,"
             " NULL::timestamptz AS created_at WHERE false")  # gives the UNION its column types
    parts, params = [typed], []
    for rule in rules:
        sql, rule_params = _wanted_sql(rule)
        parts.append(f"SELECT %s, %s, %s, %s, w.contact_id, w.event_id, w.created_at FROM ({sql}) w")  # noqa: S608
        params += [rule.pk, rule.name, rule.points, rule.half_life_days, *rule_params]
    return " UNION ALL ".join(parts), params


def _behaviour_diff_postgresql(rules: Sequence[ScoringRule]) -> LedgerDiff:
    """One statement for a group of behaviour rules: the entries they should give (UNION ALL of
    each rule's SELECT) FULL JOINed to the entries they hold, read in ONE pass over the ledger (it
    has no rule index: a pass per rule read it ten times), and the rows that differ deleted,
    updated or inserted by data-modifying CTEs.

    A full recompute with unchanged rules used to DELETE and re-INSERT every entry (4.5M rows, an
    index entry each, and as many dead rows for vacuum); now it writes nothing."""
    wanted, params = _wanted_union_sql(rules)
    rule_ids = [rule.pk for rule in rules]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = '256MB'")  # the ROW_NUMBER() sorts and the join's hash stay in memory
        # Rules holding no entry at all (the first recompute, or a rule whose entries all went): a
        # plain INSERT ... SELECT, without the FULL JOIN, its materialised diff and ON CONFLICT's
        # speculative insertion (40 s instead of 30 s for 4.47M entries; issue 18, item 3). No rule
        # index: the scan stops at the first entry, which a full ledger has near its start.
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {ENTRY_TABLE} WHERE rule_id = ANY(%s))",  # noqa: S608
                       [rule_ids])
        if not cursor.fetchone()[0]:
            added = _behaviour_insert_fresh(cursor, wanted, params)
            if added is not None:
                return LedgerDiff(added=added)
    sql = (  # table names are model constants; values are parameters
        f"WITH d AS ({wanted}),"  # noqa: S608
        f" cur AS (SELECT id, rule_id, contact_id, event_id, rule_name, points, half_life_days, reason, created_at"
        f"  FROM {ENTRY_TABLE} WHERE rule_id = ANY(%s)),"
        f" diff AS MATERIALIZED (SELECT cur.id AS old_id, d.* FROM d FULL JOIN cur"
        f"  ON cur.rule_id = d.rule_id AND cur.contact_id = d.contact_id AND cur.event_id = d.event_id"
        f"  WHERE cur.id IS NULL OR d.event_id IS NULL OR cur.rule_name <> d.rule_name OR cur.points <> d.points"
        f"   OR cur.half_life_days IS DISTINCT FROM d.half_life_days OR cur.reason <> ''"
        f"   OR cur.created_at <> d.created_at),"
        f" removed AS (DELETE FROM {ENTRY_TABLE} e USING diff WHERE e.id = diff.old_id AND diff.event_id IS NULL"
        f"  RETURNING 1),"
        f" changed AS (UPDATE {ENTRY_TABLE} e SET rule_name = diff.rule_name, points = diff.points,"
        f"  half_life_days = diff.half_life_days, reason = '', created_at = diff.created_at FROM diff"
        f"  WHERE e.id = diff.old_id AND diff.event_id IS NOT NULL RETURNING 1),"
        f" added AS (INSERT INTO {ENTRY_TABLE} (contact_id, rule_id, rule_name, event_id, points, half_life_days,"
        f"  reason, created_at) SELECT diff.contact_id, diff.rule_id, diff.rule_name, diff.event_id, diff.points,"
        f"  diff.half_life_days, '', diff.created_at FROM diff"
        # In contact order, the ledger's (contact, rule, event) index fills front to back instead of
        # at random places (30 s instead of 48 s for 4.5M entries here). ON CONFLICT although its
        # speculative insertion is slower: live scoring (`score_events`) inserts the same entries,
        # and one scored while this statement runs would otherwise undo the whole group's rebuild.
        f"  WHERE diff.old_id IS NULL ORDER BY diff.contact_id"
        f"  ON CONFLICT (contact_id, rule_id, event_id) DO NOTHING RETURNING 1)"
        f" SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM changed), (SELECT count(*) FROM removed)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, rule_ids])
        added, changed, removed = cursor.fetchone()
    return LedgerDiff(added, changed, removed)


def _behaviour_insert_fresh(cursor: Any, wanted: str, params: list[Any]) -> int | None:
    """Insert the wanted entries of rules that hold none; how many, or None when live scoring
    (`score_events`) inserted one of them meanwhile (the unique (contact, rule, event) index
    refuses it; the savepoint undoes the attempt and the caller diffs instead, which skips them)."""
    sql = (  # table names are model constants; values are parameters
        f"INSERT INTO {ENTRY_TABLE} (contact_id, rule_id, rule_name, event_id, points, half_life_days, reason,"  # noqa: S608
        f" created_at) SELECT d.contact_id, d.rule_id, d.rule_name, d.event_id, d.points, d.half_life_days, '',"
        f" d.created_at FROM ({wanted}) d ORDER BY d.contact_id"  # the (contact, rule, event) index fills in order
    )
    try:
        with transaction.atomic():
            cursor.execute(sql, params)
            return int(cursor.rowcount)
    except IntegrityError:
        return None


def _behaviour_diff_sqlite(rule: ScoringRule) -> LedgerDiff:
    """SQLite has no data-modifying CTEs: a rule's wanted entries go to a temp table, then three
    statements remove, update and add what differs (each probing the (contact, rule, event) index)."""
    wanted_sql, wanted_params = _wanted_sql(rule)
    values: list[Any] = [rule.name, rule.points, rule.half_life_days]
    match = "d.contact_id = e.contact_id AND d.event_id = e.event_id"
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS temp.scoring_wanted")
        cursor.execute(f"CREATE TEMP TABLE scoring_wanted AS {wanted_sql}", wanted_params)
        cursor.execute(
            f"DELETE FROM {ENTRY_TABLE} AS e WHERE e.rule_id = %s"  # noqa: S608
            f" AND NOT EXISTS (SELECT 1 FROM temp.scoring_wanted d WHERE {match})", [rule.pk])
        removed = cursor.rowcount
        cursor.execute(
            f"UPDATE {ENTRY_TABLE} AS e SET rule_name = %s, points = %s, half_life_days = %s, reason = '',"  # noqa: S608
            f" created_at = d.created_at FROM temp.scoring_wanted d WHERE e.rule_id = %s AND {match}"
            f" AND (e.rule_name <> %s OR e.points <> %s OR e.half_life_days IS NOT %s OR e.reason <> ''"
            f" OR e.created_at <> d.created_at)", [*values, rule.pk, *values])
        changed = cursor.rowcount
        cursor.execute(
            f"INSERT INTO {ENTRY_TABLE} (contact_id, rule_id, rule_name, event_id, points, half_life_days, reason,"  # noqa: S608
            f" created_at) SELECT d.contact_id, %s, %s, d.event_id, %s, %s, '', d.created_at FROM temp.scoring_wanted d"
            f" WHERE NOT EXISTS (SELECT 1 FROM {ENTRY_TABLE} e WHERE e.rule_id = %s AND {match})"
            f" ORDER BY d.contact_id ON CONFLICT DO NOTHING", [rule.pk, *values, rule.pk])
        added = cursor.rowcount
        cursor.execute("DROP TABLE temp.scoring_wanted")
    return LedgerDiff(added, changed, removed)


def _rebuild_fit(rule: ScoringRule, now: dt.datetime) -> LedgerDiff:
    """One entry of rule.points per contact matching the conditions, writing only the difference: a
    matching contact that already holds exactly that one entry keeps it (and its date); the rule's
    other entries go, and matching contacts without an entry get one."""
    from contacts.segments.compiler import compile_filter

    match_sql, match_params = (_queryset_sql(Contact.objects.filter(compile_filter(rule.conditions, now=now))
                                             .values("id")) if rule.is_active and rule.conditions else
                               (f"SELECT id FROM {CONTACT_TABLE} WHERE 1 = 0", ()))  # noqa: S608
    keep = (  # contacts whose entries for the rule are already exactly what the rebuild would write
        f"SELECT e.contact_id FROM {ENTRY_TABLE} e WHERE e.rule_id = %s AND e.contact_id IN ({match_sql})"  # noqa: S608
        f" GROUP BY e.contact_id HAVING COUNT(*) = 1 AND MIN(e.points) = %s AND MIN(e.rule_name) = %s"
        f" AND MAX(e.event_id) IS NULL AND MAX(e.half_life_days) IS NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {ENTRY_TABLE} WHERE rule_id = %s AND contact_id NOT IN ({keep})",  # noqa: S608
                       [rule.pk, rule.pk, *match_params, rule.points, rule.name])
        removed = cursor.rowcount
        cursor.execute(
            f"INSERT INTO {ENTRY_TABLE} (contact_id, rule_id, rule_name, event_id, points, half_life_days, reason,"  # noqa: S608
            f" created_at) SELECT c.id, %s, %s, NULL, %s, NULL, %s, %s FROM {CONTACT_TABLE} c"
            f" WHERE c.id IN ({match_sql}) AND c.id NOT IN (SELECT contact_id FROM {ENTRY_TABLE} WHERE rule_id = %s)",
            [rule.pk, rule.name, rule.points, "matches the conditions (recompute)", now_param(now), *match_params,
             rule.pk])
        added = cursor.rowcount
    return LedgerDiff(added=added, removed=removed)


def scoring_rule_rebuild(*, rule: ScoringRule, now: dt.datetime | None = None) -> LedgerDiff:
    """Make one rule's ledger entries what the current rule gives (none if it is inactive), writing
    only the entries that differ: a rebuild of an unchanged rule on unchanged events writes nothing."""
    return scoring_rules_rebuild(rules=[rule], now=now)


def scoring_rules_rebuild(*, rules: Sequence[ScoringRule], now: dt.datetime | None = None) -> LedgerDiff:
    """scoring_rule_rebuild for several rules in one transaction; on PostgreSQL their behaviour
    rules share one pass over the ledger."""
    now = now or timezone.now()
    behaviour = [rule for rule in rules if rule.kind == RuleKind.BEHAVIOUR]
    diff = LedgerDiff()
    with transaction.atomic():
        if behaviour and connection.vendor == "postgresql":
            diff += _behaviour_diff_postgresql(behaviour)
        elif behaviour:
            for rule in behaviour:
                diff += _behaviour_diff_sqlite(rule)
        for rule in rules:
            if rule.kind != RuleKind.BEHAVIOUR:
                diff += _rebuild_fit(rule, now)
    return diff


def _job_progress(job: RecomputeJob | None, progress: int, message: str = "") -> None:
    if job is not None:
        RecomputeJob.objects.filter(pk=job.pk).update(progress=progress, message=message)


def scores_recompute_all(
    *, rule_ids: Collection[int] | None = None, job: RecomputeJob | None = None, now: dt.datetime | None = None,
    timings: dict[str, float] | None = None, ledger: dict[str, int] | None = None,
) -> int:
    """Rebuild the ledger of the given rules (None: all), then every cached score and grade, then MQL;
    progress goes on `job`. Returns how many contacts' score or grade changed. Only what differs is
    written: entries (see scoring_rule_rebuild) and cached scores alike.

    On PostgreSQL outside a transaction the work is spread over SCORING_RECOMPUTE_CONNECTIONS
    connections: rules are rebuilt side by side (each in its own transaction, as before) and the
    cached scores are updated in contact id ranges, one transaction each.
    `timings`, when given, receives the seconds each phase took (rules, scores, mql, analyze);
    `ledger` the entries added, changed and removed."""
    now = now or timezone.now()
    rules = ScoringRule.objects.all() if rule_ids is None else ScoringRule.objects.filter(pk__in=rule_ids)
    rule_list = list(rules.order_by("pk"))
    workers = _connections()
    rebuilt: list[str] = []
    clock = _PhaseClock(timings)

    def rebuild(group: list[ScoringRule]) -> Callable[[], LedgerDiff]:
        def task() -> LedgerDiff:
            diff = scoring_rules_rebuild(rules=group, now=now)
            rebuilt.extend(rule.name for rule in group)  # progress counts finished rules
            _job_progress(job, int(80 * len(rebuilt) / (len(rule_list) + 1)),
                          f"rebuilt rule(s) {', '.join(repr(rule.name) for rule in group)}")
            return diff
        return task

    # One group of rules per connection: each group reads the ledger once (see _behaviour_diff_postgresql).
    # SQLite rebuilds rule by rule anyway, and a transaction per rule holds its only write lock
    # (live scoring's too) for one rule at a time, not for the whole recompute.
    groups = ([rule_list[i::workers] for i in range(workers) if rule_list[i::workers]]
              if connection.vendor == "postgresql" else [[rule] for rule in rule_list])
    diff = sum(_side_by_side([rebuild(group) for group in groups], workers), LedgerDiff())
    if ledger is not None:
        ledger.update(added=diff.added, changed=diff.changed, removed=diff.removed)
    clock.lap("rules")

    def update(low: int, high: int) -> Callable[[], int]:
        def task() -> int:
            with transaction.atomic():
                return _scores_write("{id} BETWEEN %s AND %s", [low, high], now, bulk=True, returning=False)[0]
        return task

    changed = sum(_side_by_side([update(low, high) for low, high in _id_ranges(workers)], workers))
    clock.lap("scores")
    _job_progress(job, 90, f"{changed} scores changed; grading")
    with transaction.atomic():
        threshold = _mql_threshold()  # a lowered MQL band qualifies contacts whose score did not change
        if threshold is not None:
            crossing = Contact.objects.filter(mql_at__isnull=True, scorecard__score__gte=threshold) \
                .values_list("id", flat=True)
            for chunk in chunked(list(crossing), CHUNK):
                _mql_update(chunk, now)
    clock.lap("mql")
    if connection.vendor == "postgresql" and changed:
        # Scores changed wholesale: refresh the planner's statistics now rather than at the next
        # autovacuum, or segment counts filtering on score plan for the old distribution.
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {SCORE_TABLE}")
    clock.lap("analyze")
    logger.info("scores_recompute_all: %d rule(s), %d score(s) changed", len(rule_list), changed,
                extra={"timings": clock.laps})
    return changed


class _PhaseClock:
    """Seconds per phase, into the caller's dict (or a private one)."""

    def __init__(self, laps: dict[str, float] | None) -> None:
        self.laps = laps if laps is not None else {}
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 2)
        tracing.record_phase(f"recompute.{name}", now - self.last)
        self.last = now


def recompute_job_create(
    *, reason: str, created_by: AbstractBaseUser | AnonymousUser | None = None,
) -> RecomputeJob:
    """Record a recompute and queue it on "default"; the RQ job leaves when the transaction commits."""
    user = created_by if isinstance(created_by, User) else None
    job = RecomputeJob(reason=reason[:200], created_by=user)
    job.full_clean()
    job.save()
    get_queue("default").enqueue("scoring.tasks.recompute_job_run", job.pk, job_id=f"scoring-recompute-{job.pk}")
    return job


def _rules_changed_since_last_run() -> list[int]:
    """Rules edited since the last completed recompute started (all rules if none completed)."""
    last = (RecomputeJob.objects.filter(status=RecomputeJob.Status.COMPLETED, started_at__isnull=False)
            .order_by("-started_at").values_list("started_at", flat=True).first())
    rules = ScoringRule.objects.all() if last is None else ScoringRule.objects.filter(updated_at__gte=last)
    return list(rules.values_list("pk", flat=True))


def recompute_job_run(*, job_id: int, now: dt.datetime | None = None) -> bool:
    """Claim a queued job, rebuild the changed rules and every score; False if it was not queued."""
    started = timezone.now()
    claimed = RecomputeJob.objects.filter(pk=job_id, status=RecomputeJob.Status.QUEUED).update(
        status=RecomputeJob.Status.RUNNING, started_at=started, progress=0,
    )
    if claimed != 1:
        return False
    job = RecomputeJob.objects.get(pk=job_id)
    try:
        rule_ids = _rules_changed_since_last_run()
        phases: dict[str, float] = {}
        changed = scores_recompute_all(rule_ids=rule_ids, job=job, now=now, timings=phases)
    except Exception as exc:
        logger.exception("recompute job %s failed", job_id)
        RecomputeJob.objects.filter(pk=job_id).update(
            status=RecomputeJob.Status.FAILED, finished_at=timezone.now(), message=f"{type(exc).__name__}: {exc}",
        )
        raise
    RecomputeJob.objects.filter(pk=job_id).update(
        status=RecomputeJob.Status.COMPLETED, progress=100, finished_at=timezone.now(),
        message=f"Rebuilt {len(rule_ids)} rule(s); {changed} contact(s) got a new score or grade"
                f" (rules {phases.get('rules', 0):.1f} s, scores {phases.get('scores', 0):.1f} s).",
    )
    return True

