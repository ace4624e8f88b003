"""Enrollments woken or triggered together advance set-based through send, wait and branch steps
(issue 18, item 2), and a burst in the same events batch does not hold back signups (issue 25)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from automation import engine
from automation.models import Enrollment, StepRun
from automation.services import workflow_enroll
from automation.tests.conftest import deploy, emit, make_contact, wf_file
from campaigns.models import Message
from contacts.models import Event, Segment, SegmentMembership
from contacts.pipeline import events_process
from core.queues import get_queue
from core.testing.scores import score_set

pytestmark = pytest.mark.django_db

WEBINAR: list[dict[str, Any]] = [
    {"id": "wait", "type": "wait", "duration": "2d"},
    {"id": "attended", "type": "branch", "if": {"event": "webinar_attended", "within": "7d"},
     "then": "thanks", "else": "replay"},
    {"id": "thanks", "type": "send_email", "template": "thanks", "next": "end"},
    {"id": "replay", "type": "send_email", "template": "replay"},
]


def wake_and_count(n: int, tag: str) -> tuple[int, list[int], dt.datetime]:
    """n enrollments asleep on the webinar's wait (two attended); the queries of the one advance
    call that wakes them, branches them and sends their emails."""
    workflow = deploy(wf_file(f"webinar-{tag}", trigger={"type": "manual"}, templates=["thanks", "replay"],
                              steps=WEBINAR))
    contacts = [make_contact(f"{tag}{i}@example.com") for i in range(n)]
    ids = workflow_enroll(workflow=workflow, contact_ids=[c.pk for c in contacts], actor="test")
    now = timezone.now()
    engine.enrollments_advance(enrollment_ids=ids, now=now)
    for c in contacts[:2]:
        emit(c, "webinar_attended", at=now + dt.timedelta(hours=1))
    later = now + dt.timedelta(days=2, seconds=1)
    engine.enrollments_wake(now=later)
    with CaptureQueriesContext(connection) as queries:
        assert engine.enrollments_advance(enrollment_ids=ids, now=later) == n
    return len(queries), ids, later


def test_a_wake_branches_and_sends_with_the_same_queries_for_50_as_for_5(sender) -> None:
    # given 5, then 50, webinar registrations whose 2-day wait ends together, two of each attended
    five, _, _ = wake_and_count(5, "few")
    fifty, ids, later = wake_and_count(50, "many")
    # then the wake, the branch and both emails cost the same queries for 50 as for 5 (no
    # per-enrollment round trip: before, each branch ran one by one in its own savepoint), give
    # or take a bulk INSERT split in two (SQLite takes ~40 messages per statement)
    assert five <= fifty <= five + 2
    # and each took its own branch once, with its StepRun recording why
    runs = {r.enrollment_id: r for r in StepRun.objects.filter(enrollment_id__in=ids, step_id="attended")}
    assert len(runs) == 50
    attended = set(Enrollment.objects.filter(contact__email__in=["many0@example.com", "many1@example.com"])
                   .values_list("pk", flat=True))
    assert {pk: (r.status, r.step_type, r.result["matched"], r.result["next"]) for pk, r in runs.items()} == {
        pk: ("succeeded", "branch", pk in attended, "thanks" if pk in attended else "replay") for pk in ids}
    sent = Message.objects.filter(contact__email__startswith="many")
    assert sent.filter(template__key="thanks").count() == 2
    assert sent.filter(template__key="replay").count() == 48
    assert set(Enrollment.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"completed"}
    # a replayed job (a duplicate, or a crash replayed from before the branch) does nothing twice
    Enrollment.objects.filter(pk__in=ids[:5]).update(status="active", step_id="attended", seq=1, next_run_at=later)
    engine.enrollments_advance(enrollment_ids=ids + ids, now=later)
    assert StepRun.objects.filter(enrollment_id__in=ids).count() == 150
    assert sent.count() == 50
    assert set(Enrollment.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"completed"}


def test_set_based_conditions_agree_with_the_one_by_one_evaluation(sender) -> None:
    vip = Segment.objects.create(name="VIP", definition={}, is_active=False)
    contacts = [make_contact(f"c{i}@example.com", attributes={"plan": "pro" if i % 2 else "free"})
                for i in range(6)]
    for i, c in enumerate(contacts):
        score_set(c, i * 5)
        if i % 3 == 0:
            SegmentMembership.objects.create(segment=vip, contact=c)
    now = timezone.now()
    Event.objects.create(contact=contacts[1], event_type="webinar_attended", occurred_at=now - dt.timedelta(days=1),
                         properties={"room": "a"}, source="api:test")
    Event.objects.create(contact=contacts[2], event_type="webinar_attended", occurred_at=now - dt.timedelta(days=9),
                         source="api:test")
    workflow = deploy(wf_file(trigger={"type": "manual"}, steps=[{"id": "w", "type": "wait", "duration": "1d"}]))
    ids = workflow_enroll(workflow=workflow, contact_ids=[c.pk for c in contacts], actor="test")
    enrollments = list(Enrollment.objects.select_related("contact").filter(pk__in=ids))
    conditions: list[dict[str, Any]] = [
        {"segment": "VIP"}, {"segment": vip.pk}, {"field": "attributes.plan", "op": "eq", "value": "pro"},
        {"field": "email", "op": "contains", "value": "c1"}, {"score_above": 10},
        {"event": "webinar_attended"}, {"event": "webinar_attended", "within": "7d"},
        {"event": "webinar_attended", "where": {"room": "a"}}, {"email": "opened"},
    ]
    for cond in conditions:
        together = engine.conditions_hold(cond, enrollments, now)
        one_by_one = {e.pk: engine.condition_holds(cond, contact=e.contact, now=now, enrollment=e)
                      for e in enrollments}
        assert together == one_by_one, cond
        assert any(together.values()) or cond == {"email": "opened"}, cond


def test_signups_in_a_burst_batch_run_first_in_process_and_the_burst_goes_to_jobs(
        sender, monkeypatch, django_capture_on_commit_callbacks) -> None:
    # given one events batch holding a burst (one API call: one correlation id) bigger than an
    # advance batch, and two signups (a request each) that arrived meanwhile
    deploy(wf_file(templates=["hi"], steps=[{"id": "hi", "type": "send_email", "template": "hi"}]))
    monkeypatch.setattr(engine, "ADVANCE_BATCH", 20)
    monkeypatch.setattr(engine, "SMALL_CAUSE", 5, raising=False)
    monkeypatch.setattr(engine, "get_current_job", lambda: object())  # as inside the event job
    burst = [make_contact(f"burst{i}@example.com") for i in range(30)]
    signups = [make_contact(f"signup{i}@example.com") for i in range(2)]
    now = timezone.now()
    events = [Event.objects.create(contact=c, event_type="signed_up", occurred_at=now, source="api:test",
                                   correlation_id="call-1") for c in burst]
    events += [Event.objects.create(contact=c, event_type="signed_up", occurred_at=now, source="api:test",
                                    correlation_id=f"req-{i}") for i, c in enumerate(signups)]
    queue = get_queue("default")
    queue.empty()
    # when the events job processes them and commits
    with django_capture_on_commit_callbacks() as after_commit:
        events_process(event_ids=[e.pk for e in events])
    for callback in after_commit:  # COMMIT (run by hand: delivery's own kick would defer itself forever)
        callback()
    # then the signups' first steps ran right after COMMIT in this process: their emails are queued
    assert set(Message.objects.values_list("contact__email", flat=True)) == {c.email for c in signups}
    # and the burst went to advance jobs of JOB_CHUNK, which run it once
    jobs = [j for j in queue.get_jobs() if j.id.startswith("wf-advance-")]
    queued = [pk for j in jobs for pk in j.args[0]]
    assert sorted(queued) == sorted(Enrollment.objects.filter(contact__in=burst).values_list("pk", flat=True))
    for job in jobs:
        engine.enrollments_advance(enrollment_ids=job.args[0])
    assert Message.objects.count() == 32
    assert set(Enrollment.objects.values_list("status", flat=True)) == {"completed"}


def test_a_branch_the_set_based_path_cannot_evaluate_goes_one_by_one_and_the_rest_of_the_batch_advances(
        monkeypatch) -> None:
    # given two workflows' enrollments in one advance batch, each at a branch; the set-based
    # evaluation of the first one's condition hits a database error (anything unexpected: a
    # FieldError, an AttributeError, a dropped connection)
    def branch(key: str, event: str) -> list[int]:
        workflow = deploy(wf_file(key, trigger={"type": "manual"}, steps=[
            {"id": "b", "type": "branch", "if": {"event": event}, "then": "end", "else": "end"}]))
        contacts = [make_contact(f"{key}{i}@example.com") for i in range(3)]
        return workflow_enroll(workflow=workflow, contact_ids=[c.pk for c in contacts], actor="test")

    failing, healthy = branch("failing", "boom"), branch("healthy", "fine")
    real = engine.conditions_hold

    def conditions_hold(cond: dict[str, Any], enrollments: list[Enrollment], now: dt.datetime) -> Any:
        if cond.get("event") == "boom":
            connection.cursor().execute("SELECT no_such_column FROM automation_enrollment")
        return real(cond, enrollments, now)

    monkeypatch.setattr(engine, "conditions_hold", conditions_hold)
    # when they advance together
    assert engine.enrollments_advance(enrollment_ids=failing + healthy, now=timezone.now()) == 6
    # then the healthy workflow's branched set-based, and the failing group went the one-by-one way
    # (which evaluates the condition by itself), instead of the error undoing the whole batch
    assert set(Enrollment.objects.filter(pk__in=failing + healthy).values_list("status", flat=True)) == {"completed"}
    runs = StepRun.objects.filter(enrollment_id__in=failing + healthy, step_id="b")
    assert [(r.status, r.result["matched"]) for r in runs] == [("succeeded", False)] * 6
