"""Grades follow the score; reaching an MQL band the first time makes the contact an MQL, once."""

from __future__ import annotations

import datetime as dt

import pytest

from contacts.models import Event
from core.models import AuditEntry
from scoring.services import score_events, scores_decay
from scoring.tests.factories import NOW, bands, behaviour_rule, contact, event

pytestmark = pytest.mark.django_db


def test_grade_is_the_highest_band_reached_and_empty_below_all_bands() -> None:
    bands()
    behaviour_rule(points=5)
    ann, bob = contact(), contact()
    score_events(events=[event(ann, at=NOW)], now=NOW)
    score_events(events=[event(bob, at=NOW) for _ in range(3)], now=NOW)
    ann.refresh_from_db()
    bob.refresh_from_db()
    assert (ann.score, ann.grade) == (5, "")
    assert (bob.score, bob.grade) == (15, "C")


def test_crossing_into_an_mql_band_sets_mql_at_stage_audit_and_an_event_once() -> None:
    bands()
    behaviour_rule("Demo", "demo_request", points=35)
    behaviour_rule("Visits", points=30)
    behaviour_rule("Unsubscribed", "unsubscribe", points=-100)
    ann = contact(lifecycle_stage="lead")
    score_events(events=[event(ann, "demo_request", at=NOW)], now=NOW)
    ann.refresh_from_db()
    assert (ann.score, ann.grade, ann.lifecycle_stage, ann.mql_at) == (35, "B", "mql", NOW)
    became = Event.objects.get(event_type="became_mql")
    assert (became.contact_id, became.source, became.properties) == (ann.pk, "system", {"score": 35, "grade": "B"})
    audit = AuditEntry.objects.get(action="contact.became_mql")
    assert (audit.target_type, audit.target_id, audit.actor_label) == ("contacts.contact", str(ann.pk), "scoring")

    # Higher band, a drop below and a climb back: still only the first crossing counts.
    later = NOW + dt.timedelta(days=1)
    score_events(events=[event(ann, at=later)], now=later)
    score_events(events=[event(ann, "unsubscribe", at=later)], now=later)
    score_events(events=[event(ann, at=later), event(ann, at=later), event(ann, at=later)], now=later)
    ann.refresh_from_db()
    assert (ann.score, ann.grade, ann.mql_at) == (55, "B", NOW)
    assert Event.objects.filter(event_type="became_mql").count() == 1
    assert AuditEntry.objects.filter(action="contact.became_mql").count() == 1


def test_mql_keeps_later_lifecycle_stages() -> None:
    bands()
    behaviour_rule("Demo", "demo_request", points=70)
    customer, subscriber = contact(lifecycle_stage="customer"), contact()
    score_events(events=[event(customer, "demo_request", at=NOW), event(subscriber, "demo_request", at=NOW)], now=NOW)
    customer.refresh_from_db()
    subscriber.refresh_from_db()
    assert (customer.lifecycle_stage, customer.grade, customer.mql_at) == ("customer", "A", NOW)
    assert subscriber.lifecycle_stage == "mql"


def test_decay_regrades() -> None:
    bands()
    behaviour_rule("Webinar", "webinar", points=40, half_life_days=7)
    ann = contact()
    score_events(events=[event(ann, "webinar", at=NOW)], now=NOW)
    scores_decay(now=NOW + dt.timedelta(days=14))
    ann.refresh_from_db()
    assert (ann.score, ann.grade) == (10, "C")
    assert ann.mql_at == NOW  # an MQL stays one
