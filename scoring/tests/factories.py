"""Factories for scoring tests: contacts, events, rules and grade bands with sensible defaults."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from django.utils import timezone

from contacts.models import Contact, Event
from scoring.models import GradeBand, RuleKind, ScoringRule

_seq = itertools.count(1)
NOW = dt.datetime(2026, 3, 4, 12, 0, tzinfo=dt.UTC)  # a Wednesday


def contact(**fields: Any) -> Contact:
    fields.setdefault("email", f"lead{next(_seq)}@example.com")
    return Contact.objects.create(**fields)


def event(who: Contact, event_type: str = "page_view", *, at: dt.datetime | None = None,
          properties: dict[str, Any] | None = None, **fields: Any) -> Event:
    return Event.objects.create(contact=who, event_type=event_type, properties=properties or {},
                                occurred_at=at or timezone.now(), source=fields.pop("source", "test"), **fields)


def behaviour_rule(name: str = "Page views", event_type: str = "page_view", points: int = 5,
                   **fields: Any) -> ScoringRule:
    return ScoringRule.objects.create(name=name, kind=RuleKind.BEHAVIOUR, event_type=event_type, points=points,
                                      **fields)


def fit_rule(name: str, conditions: dict[str, Any], points: int, **fields: Any) -> ScoringRule:
    return ScoringRule.objects.create(name=name, kind=RuleKind.FIT, conditions=conditions, points=points, **fields)


def bands() -> None:
    """C from 10, B from 30, A from 60 (A and B are MQL bands)."""
    GradeBand.objects.create(grade="C", min_score=10)
    GradeBand.objects.create(grade="B", min_score=30, is_mql=True)
    GradeBand.objects.create(grade="A", min_score=60, is_mql=True)
