"""Reads for the sales lead views: the ranked, filtered lead list and one lead's score breakdown."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import overload

from django.db import connections, router
from django.db.models import Q
from django.utils import timezone

from contacts.models import Contact, ContactQuerySet, Event, SegmentMembership
from scoring.models import ScoreEntry
from scoring.sql import effective_points_sql, now_param

TIMELINE_EVENTS = 50


@dataclass(frozen=True)
class LeadFilters:
    q: str = ""
    grade: str = ""
    owner_id: int | None = None
    lifecycle_stage: str = ""
    segment_id: int | None = None
    mql_this_week: bool = False


def week_start(now: dt.datetime) -> dt.datetime:
    """Monday 00:00 of `now`'s week, in the current time zone."""
    local = timezone.localtime(now)
    return (local - dt.timedelta(days=local.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)


def leads_list(*, filters: LeadFilters, now: dt.datetime | None = None) -> RankedLeads:
    """Contacts ranked by score (highest first, newest first among equals), filtered."""
    qs = Contact.objects.all()
    if filters.q:
        term = filters.q.strip()
        qs = qs.filter(Q(email__icontains=term) | Q(first_name__icontains=term) | Q(last_name__icontains=term)
                       | Q(company__icontains=term))
    if filters.grade:  # a grade is never '', so contacts without a ContactScore row never match
        qs = qs.filter(scorecard__grade=filters.grade)
    if filters.owner_id is not None:
        qs = qs.filter(owner_id=filters.owner_id)
    if filters.lifecycle_stage:
        qs = qs.filter(lifecycle_stage=filters.lifecycle_stage)
    if filters.segment_id is not None:
        qs = qs.filter(id__in=SegmentMembership.objects.filter(segment_id=filters.segment_id).values("contact_id"))
    if filters.mql_this_week:
        qs = qs.filter(mql_at__gte=week_start(now or timezone.now()))
    return RankedLeads(qs, sort_all=bool(filters.q))


class RankedLeads:
    """`contacts` in lead order (score descending, newest first among equals), with their score and
    grade, for Paginator (count and slices) and the CSV export (iterator).

    Read in three parts, each in the order of an index, so that a page reads its own rows and no
    more: scores above 0 (contactscore_rank_idx from the top), then the contacts at 0, most of them
    without a ContactScore row (the primary key backwards), then scores below 0 (the rank index
    again). One ORDER BY over the coalesced score would read, join and sort every contact for every
    page, and a UNION ALL of the parts is planned the same way (PostgreSQL sorts the appended rows
    rather than merging the index scans). On PostgreSQL with a million contacts, 40 % scored: the
    first page's rows in 1 ms here against 1 s sorted (plus the count, as before). A page that starts
    past the end of a part counts that part to skip it (deep pages only).
    A search (`sort_all`) is the exception: no index serves a substring match, so every contact is
    read whatever the order, and one sorted query reads them once instead of once per part.
    """

    ordered = True  # for Paginator

    def __init__(self, contacts: ContactQuerySet, *, sort_all: bool = False) -> None:
        self.contacts = contacts.order_by()
        self.sort_all = sort_all
        self._count: int | None = None

    def parts(self) -> list[ContactQuerySet]:
        contacts = self.contacts.select_related("owner").with_scores()
        if self.sort_all:
            return [contacts.order_by("-score", "-id")]
        return [  # ordered by the column, not the coalesced annotation: the rank index gives that order
            contacts.filter(scorecard__score__gt=0).order_by("-scorecard__score", "-id"),
            contacts.filter(Q(scorecard__isnull=True) | Q(scorecard__score=0)).order_by("-id"),
            contacts.filter(scorecard__score__lt=0).order_by("-scorecard__score", "-id"),
        ]

    def count(self) -> int:
        if self._count is None:
            self._count = self.contacts.count()
        return self._count

    def __len__(self) -> int:
        return self.count()

    @overload
    def __getitem__(self, index: int) -> Contact: ...
    @overload
    def __getitem__(self, index: slice) -> list[Contact]: ...
    def __getitem__(self, index: int | slice) -> Contact | list[Contact]:
        if isinstance(index, int):
            found = self[index:index + 1] if index >= 0 else []
            if not found:
                raise IndexError(index)
            return found[0]
        start, stop = index.start or 0, index.stop
        if index.step not in (None, 1) or start < 0 or stop is None or stop < 0:
            raise TypeError("RankedLeads takes slices [start:stop] with positive bounds")
        rows: list[Contact] = []
        for part in self.parts():
            if start >= stop:
                break
            got = list(part[start:stop])
            if got or start == 0:
                rows += got
                start, stop = 0, stop - start - len(got)
            else:  # the window starts past the end of this part
                size = part.count()
                start, stop = start - size, stop - size
        return rows

    def iterator(self, chunk_size: int = 2000) -> Iterator[Contact]:
        for part in self.parts():
            yield from part.iterator(chunk_size=chunk_size)

    def __iter__(self) -> Iterator[Contact]:
        return self.iterator()


@dataclass(frozen=True)
class RulePoints:
    rule_name: str
    entries: int
    points: int  # raw sum
    effective: float  # after decay


def lead_score_breakdown(*, contact: Contact, now: dt.datetime | None = None) -> list[RulePoints]:
    """Effective points per rule name (with how many entries), largest contribution first."""
    sql = (  # the table name is a model constant; values are parameters
        f"SELECT e.rule_name, COUNT(*), SUM(e.points), SUM({effective_points_sql('e')})"  # noqa: S608
        f" FROM {ScoreEntry._meta.db_table} e WHERE e.contact_id = %s GROUP BY e.rule_name"
    )
    # The read replica when the caller is marked read-only (config/db_router.py), else the primary.
    with connections[router.db_for_read(ScoreEntry)].cursor() as cursor:
        cursor.execute(sql, [now_param(now or timezone.now()), contact.pk])
        rows = [RulePoints(name, count, int(points), round(float(eff), 1)) for name, count, points, eff in cursor]
    return sorted(rows, key=lambda r: (-abs(r.effective), r.rule_name))


def lead_timeline(*, contact: Contact, limit: int = TIMELINE_EVENTS) -> list[Event]:
    return list(Event.objects.filter(contact=contact).order_by("-occurred_at", "-id")[:limit])
