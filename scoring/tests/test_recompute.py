"""Rule edits: a recompute job rebuilds the edited rules' ledger and every cached score."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rq import SimpleWorker

from core.queues import get_connection, get_queue
from scoring.models import GradeBand, RecomputeJob, ScoreEntry
from scoring.services import recompute_job_create, recompute_job_run, score_events, score_fit, scores_recompute_all
from scoring.tests.factories import NOW, bands, behaviour_rule, contact, event, fit_rule

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_queues() -> None:
    get_connection().flushdb()


def drain() -> None:
    queue = get_queue("default")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def test_recompute_rebuilds_an_edited_rule_with_new_points_repeatability_and_filters() -> None:
    rule = behaviour_rule("Visits", points=5)
    other = behaviour_rule("Demo", "demo_request", points=50)
    ann, bob = contact(), contact()
    events = [event(ann, at=NOW, properties={"path": "/pricing"}), event(ann, at=NOW + dt.timedelta(hours=1)),
              event(bob, at=NOW, properties={"path": "/pricing"}), event(bob, "demo_request", at=NOW)]
    score_events(events=events, now=NOW)
    rule.points, rule.repeatable, rule.property_filters = 7, False, {"path": "/pricing"}
    rule.save()
    changed = scores_recompute_all(rule_ids=[rule.pk], now=NOW)
    ann.refresh_from_db()
    bob.refresh_from_db()
    assert changed == 2
    assert (ann.score, bob.score) == (7, 57)
    entries = ScoreEntry.objects.filter(rule=rule)
    assert sorted(entries.values_list("event_id", flat=True)) == [events[0].pk, events[2].pk]
    assert entries.get(contact=ann).explanation == f"event #{events[0].pk}"
    assert ScoreEntry.objects.filter(rule=other).count() == 1  # untouched


def test_recompute_caps_are_approximated_per_fixed_window() -> None:
    rule = behaviour_rule("Visits", points=5)
    ann = contact()
    day = dt.datetime(2026, 3, 4, 0, 0, tzinfo=dt.UTC)  # 1970-aligned one-day windows start at midnight UTC
    events = [event(ann, at=day + dt.timedelta(hours=h)) for h in (1, 2, 3, 25)]
    score_events(events=events, now=NOW)
    rule.cap_points, rule.cap_window_days = 10, 1
    rule.save()
    scores_recompute_all(rule_ids=[rule.pk], now=NOW)
    ann.refresh_from_db()
    assert ann.score == 15  # two entries on the first day, one on the second


def test_deactivating_a_rule_removes_its_points_and_fit_rules_are_rebuilt() -> None:
    bands()
    visits = behaviour_rule("Visits", points=40)
    cto = fit_rule("CTO", {"field": "job_title", "op": "eq", "value": "CTO"}, 25)
    ann, bob = contact(job_title="CTO"), contact(job_title="CTO")
    score_events(events=[event(ann, at=NOW)], now=NOW)
    score_fit(contact_ids=[ann.pk], now=NOW)  # bob was never scored: the rebuild finds him
    visits.is_active = False
    visits.save()
    scores_recompute_all(now=NOW)
    ann.refresh_from_db()
    bob.refresh_from_db()
    assert (ann.score, ann.grade, bob.score, bob.grade) == (25, "C", 25, "C")
    assert not ScoreEntry.objects.filter(rule=visits).exists()
    assert ScoreEntry.objects.filter(rule=cto).count() == 2


def test_a_queued_job_runs_on_the_worker_and_records_progress(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    rule = behaviour_rule("Visits", points=5)
    ann = contact()
    score_events(events=[event(ann, at=NOW)], now=NOW)
    rule.points = 9
    rule.save()
    with django_capture_on_commit_callbacks(execute=True):
        job = recompute_job_create(reason="rule changed: Visits")
    assert get_queue("default").count == 1
    drain()
    job.refresh_from_db()
    ann.refresh_from_db()
    assert (job.status, job.progress, job.started_at is not None, job.finished_at is not None) == (
        "completed", 100, True, True)
    assert re.fullmatch(r"Rebuilt 1 rule\(s\); 1 contact\(s\) got a new score or grade"
                        r" \(rules \d+\.\d s, scores \d+\.\d s\)\.", job.message), job.message
    assert ann.score == 9
    assert recompute_job_run(job_id=job.pk) is False  # claimed once only


def test_later_jobs_only_rebuild_rules_edited_since_the_last_completed_one() -> None:
    behaviour_rule("Visits", points=5)
    first = RecomputeJob.objects.create(reason="first")
    recompute_job_run(job_id=first.pk)
    edited = behaviour_rule("Demo", "demo_request", points=50)
    second = RecomputeJob.objects.create(reason="second")
    recompute_job_run(job_id=second.pk)
    second.refresh_from_db()
    assert second.message.startswith("Rebuilt 1 rule(s)")  # only "Demo"
    assert ScoreEntry.objects.filter(rule=edited).count() == 0  # no events yet: nothing to derive


def test_saving_a_rule_in_the_admin_queues_a_recompute(
    role_users: dict[str, User], django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    client = Client()
    client.force_login(role_users["marketer"])
    ann = contact()
    event(ann, at=NOW)
    form = {"name": "Visits", "kind": "behaviour", "is_active": "on", "points": "4", "event_type": "page_view",
            "property_filters": "{}", "repeatable": "on", "cap_points": "", "cap_window_days": "",
            "half_life_days": "", "conditions": "{}"}
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/admin/scoring/scoringrule/add/", form)
    assert response.status_code == 302, response.content[:2000]
    job = RecomputeJob.objects.get()
    assert (job.reason, job.status, job.created_by) == ("rule added: Visits", "queued", role_users["marketer"])
    drain()
    ann.refresh_from_db()
    assert ann.score == 4


def test_a_new_mql_band_qualifies_contacts_whose_score_did_not_change() -> None:
    behaviour_rule("Visits", points=25)
    ann = contact(lifecycle_stage="lead")
    score_events(events=[event(ann, at=NOW)], now=NOW)
    GradeBand.objects.create(grade="B", min_score=20, is_mql=True)
    scores_recompute_all(rule_ids=[], now=NOW)
    ann.refresh_from_db()
    assert (ann.score, ann.grade, ann.lifecycle_stage, ann.mql_at) == (25, "B", "mql", NOW)


def test_the_ledger_follows_deleted_contacts_events_and_rules_without_database_foreign_keys() -> None:
    # Given entries for two contacts (the ledger has no DB-level foreign keys, for bulk writes)
    rule = behaviour_rule("Visits", points=5)
    ann, bob = contact(), contact()
    ann_event, bob_event = event(ann), event(bob)
    score_events(events=[ann_event, bob_event], now=NOW)
    # When an event, a contact and the rule are deleted through the ORM
    bob_event.delete()
    ann.delete()
    rule.delete()
    # Then Django's on_delete keeps it consistent: ann's entries are gone, bob's keeps its points
    # and its rule name, with the deleted event and rule set to NULL
    assert list(ScoreEntry.objects.values_list("contact_id", "event_id", "rule_id", "rule_name", "points")) == [
        (bob.pk, None, None, "Visits", 5),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_recompute_outside_a_transaction_rebuilds_every_rule() -> None:
    # Given three rules and events (committed: on PostgreSQL the rules are rebuilt on their own connections)
    behaviour_rule("Visits", points=5)
    behaviour_rule("Demo", "demo_request", points=50)
    fit_rule("Gmail", {"field": "email", "op": "contains", "value": "@"}, points=3)
    ann, bob = contact(), contact()
    event(ann), event(ann), event(bob, "demo_request")
    # When every score is recomputed
    changed = scores_recompute_all(now=NOW)
    # Then each rule's entries are there and every score adds them up
    assert changed == 2
    assert sorted(ScoreEntry.objects.values_list("rule__name", "contact_id", "points")) == sorted([
        ("Demo", bob.pk, 50), ("Gmail", ann.pk, 3), ("Gmail", bob.pk, 3), ("Visits", ann.pk, 5), ("Visits", ann.pk, 5),
    ])
    ann.refresh_from_db()
    bob.refresh_from_db()
    assert (ann.score, bob.score) == (13, 53)
