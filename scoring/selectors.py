"""Reads for the sales lead views: the ranked, filtered lead list and one lead's score breakdown."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from contacts.models import Contact, Event, SegmentMembership
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


def leads_list(*, filters: LeadFilters, now: dt.datetime | None = None) -> QuerySet[Contact]:
    """Contacts ranked by score (highest first, newest first among equals), filtered."""
    qs = Contact.objects.select_related("owner").order_by("-score", "-id")
    if filters.q:
        term = filters.q.strip()
        qs = qs.filter(Q(email__icontains=term) | Q(first_name__icontains=term) | Q(last_name__icontains=term)
                       | Q(company__icontains=term))
    if filters.grade:
        qs = qs.filter(grade=filters.grade)
    if filters.owner_id is not None:
        qs = qs.filter(owner_id=filters.owner_id)
    if filters.lifecycle_stage:
        qs = qs.filter(lifecycle_stage=filters.lifecycle_stage)
    if filters.segment_id is not None:
        qs = qs.filter(id__in=SegmentMembership.objects.filter(segment_id=filters.segment_id).values("contact_id"))
    if filters.mql_this_week:
        qs = qs.filter(mql_at__gte=week_start(now or timezone.now()))
    return qs


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
    with connection.cursor() as cursor:
        cursor.execute(sql, [now_param(now or timezone.now()), contact.pk])
        rows = [RulePoints(name, count, int(points), round(float(eff), 1)) for name, count, points, eff in cursor]
    return sorted(rows, key=lambda r: (-abs(r.effective), r.rule_name))


def lead_timeline(*, contact: Contact, limit: int = TIMELINE_EVENTS) -> list[Event]:
    return list(Event.objects.filter(contact=contact).order_by("-occurred_at", "-id")[:limit])
