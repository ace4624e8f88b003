"""Behaviour rules: matching, repeatable vs once, caps, negative points, idempotency, decay."""

from __future__ import annotations

import datetime as dt

import pytest

from scoring.models import ScoreEntry
from scoring.services import score_events, scores_decay, scores_refresh
from scoring.tests.factories import NOW, behaviour_rule, contact, event

pytestmark = pytest.mark.django_db


def test_matching_events_score_and_others_do_not() -> None:
    behaviour_rule("Pricing page", points=10, property_filters={"path": "/pricing"})
    ann = contact()
    events = [event(ann, properties={"path": "/pricing"}, at=NOW), event(ann, properties={"path": "/blog"}, at=NOW),
              event(ann, "email_open", properties={"path": "/pricing"}, at=NOW)]
    changed = score_events(events=events, now=NOW)
    ann.refresh_from_db()
    assert changed == {ann.pk}
    assert ann.score == 10
    entry = ScoreEntry.objects.get()
    assert (entry.rule_name, entry.event_id, entry.points, entry.created_at) == ("Pricing page", events[0].pk, 10, NOW)


def test_repeatable_rules_score_every_event_and_once_rules_only_the_first_ever() -> None:
    behaviour_rule("Visits", points=2)
    behaviour_rule("Demo request", "demo_request", points=30, repeatable=False)
    ann = contact()
    first = [event(ann, at=NOW), event(ann, at=NOW), event(ann, "demo_request", at=NOW),
             event(ann, "demo_request", at=NOW + dt.timedelta(minutes=1))]
    score_events(events=first, now=NOW)
    later = event(ann, "demo_request", at=NOW + dt.timedelta(days=3))
    assert score_events(events=[later], now=NOW) == set()  # already scored once, ever
    ann.refresh_from_db()
    assert ann.score == 2 + 2 + 30
    assert ScoreEntry.objects.get(rule_name="Demo request").event_id == first[2].pk  # the earliest one


def test_processing_the_same_events_twice_never_double_scores() -> None:
    behaviour_rule(points=5, cap_points=50, cap_window_days=1)
    ann = contact()
    events = [event(ann, at=NOW), event(ann, at=NOW)]
    assert score_events(events=events, now=NOW) == {ann.pk}
    assert score_events(events=events, now=NOW) == set()
    assert score_events(events=events[:1], now=NOW) == set()
    ann.refresh_from_db()
    assert ann.score == 10
    assert ScoreEntry.objects.count() == 2


def test_caps_limit_points_per_contact_per_window_across_batches() -> None:
    behaviour_rule(points=5, cap_points=12, cap_window_days=7)
    ann, bob = contact(), contact()
    score_events(events=[event(ann, at=NOW), event(ann, at=NOW), event(ann, at=NOW), event(bob, at=NOW)], now=NOW)
    score_events(events=[event(ann, at=NOW + dt.timedelta(days=1))], now=NOW)  # window already holds 10
    ann.refresh_from_db()
    bob.refresh_from_db()
    assert (ann.score, bob.score) == (10, 5)
    # A week later the window has moved on: points flow again.
    score_events(events=[event(ann, at=NOW + dt.timedelta(days=8))], now=NOW + dt.timedelta(days=8))
    ann.refresh_from_db()
    assert ann.score == 15


def test_negative_points_lower_the_score_and_caps_bound_them_too() -> None:
    behaviour_rule("Visits", points=20)
    behaviour_rule("Unsubscribed", "unsubscribe", points=-15)
    behaviour_rule("Bounced", "bounce", points=-10, cap_points=-10, cap_window_days=30)
    ann = contact()
    score_events(events=[event(ann, at=NOW), event(ann, "unsubscribe", at=NOW), event(ann, "bounce", at=NOW),
                         event(ann, "bounce", at=NOW)], now=NOW)
    ann.refresh_from_db()
    assert ann.score == 20 - 15 - 10
    assert sorted(ScoreEntry.objects.values_list("points", flat=True)) == [-15, -10, 20]


def test_decaying_points_halve_every_half_life() -> None:
    behaviour_rule("Webinar", "webinar", points=40, half_life_days=10)
    behaviour_rule("Visits", points=3)
    ann = contact()
    score_events(events=[event(ann, "webinar", at=NOW), event(ann, at=NOW)], now=NOW)
    ann.refresh_from_db()
    assert ann.score == 43
    assert scores_decay(now=NOW + dt.timedelta(days=10)) == 1
    ann.refresh_from_db()
    assert ann.score == 20 + 3
    scores_decay(now=NOW + dt.timedelta(days=25))  # 40 * 0.5 ** 2.5 = 7.07
    ann.refresh_from_db()
    assert ann.score == 7 + 3
    assert scores_decay(now=NOW + dt.timedelta(days=25)) == 0  # nothing changed the second time
    scores_decay(now=NOW + dt.timedelta(days=3650))
    ann.refresh_from_db()
    assert ann.score == 3  # decayed away, the plain points stay


def test_decay_counts_from_when_the_event_happened_for_negative_points_too() -> None:
    behaviour_rule("Webinar", "webinar", points=40, half_life_days=10)
    behaviour_rule("Spam", "spam", points=-40, half_life_days=10)
    ann, bob = contact(), contact()
    old = NOW - dt.timedelta(days=10)
    score_events(events=[event(ann, "webinar", at=old), event(bob, "spam", at=old)], now=NOW)
    ann.refresh_from_db()
    bob.refresh_from_db()
    assert (ann.score, bob.score) == (20, -20)


def test_scores_refresh_only_reports_real_changes() -> None:
    ann = contact()
    assert scores_refresh(contact_ids=[ann.pk], now=NOW) == set()
