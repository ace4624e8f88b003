"""The engine: triggers, every step type, waits, branches, re-entry, goals, pause, staging
isolation, exactly-once steps, retries and the wake tick."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from django.utils import timezone

from automation import engine
from automation.models import DeliveryStatus, Enrollment, StepRun, WebhookDelivery
from automation.services import workflow_enroll, workflow_set_paused
from automation.tests.conftest import (
    ISSUE_EXAMPLE,
    advance,
    deploy,
    emit,
    make_contact,
    wf_file,
)
from campaigns.delivery import delivery_run_batch
from campaigns.models import Message
from campaigns.tests.conftest import lazy_score_reads
from contacts.models import Contact, ContactList, CustomField, Segment, SegmentMembership, Tag
from core.queues import get_queue
from core.testing.scores import score_set
from core.webhooks import outgoing_secret, verify
from scoring.models import ScoreEntry

pytestmark = pytest.mark.django_db


def status(contact: Contact) -> tuple[str, str]:
    e = Enrollment.objects.get(contact=contact)
    return e.status, e.step_id


def test_the_issue_workflow_end_to_end_with_both_branch_paths(sender, sink) -> None:
    # given the webinar workflow in production and two registrants
    deploy(ISSUE_EXAMPLE)
    came, missed = make_contact("came@example.com", first_name="Ada"), make_contact("missed@example.com")
    # when they register
    emit(came, "webinar_registered")
    emit(missed, "webinar_registered")
    advance()
    # then each got the welcome (queued in the outbox) and waits two days
    assert sorted(Message.objects.values_list("contact__email", "template__key")) == [
        ("came@example.com", "webinar-welcome"), ("missed@example.com", "webinar-welcome")]
    assert status(came) == ("waiting", "wait")
    wakes = Enrollment.objects.get(contact=came).next_run_at
    assert wakes is not None
    assert wakes > timezone.now() + dt.timedelta(days=1, hours=23)
    delivery_run_batch(sender=sender)
    assert sorted(r.rcpt_tos[0] for r in sink.received) == ["came@example.com", "missed@example.com"]
    assert any(r.header("Subject") == "See you at the webinar, Ada" for r in sink.received)
    # when one attended and two days pass
    emit(came, "webinar_attended")
    advance(timezone.now() + dt.timedelta(days=2, minutes=1))
    # then the branch sends thanks to one and the replay to the other, and both complete
    assert Message.objects.get(contact=came, template__key="webinar-thanks")
    assert Message.objects.get(contact=missed, template__key="webinar-replay")
    assert status(came) == ("completed", "attended") or status(came)[0] == "completed"
    assert Enrollment.objects.get(contact=missed).status == "completed"
    path = list(StepRun.objects.filter(enrollment__contact=came).values_list("step_id", "status"))
    assert path == [("welcome", "succeeded"), ("sync", "succeeded"), ("wait", "succeeded"),
                    ("attended", "succeeded"), ("thanks", "succeeded")]


def test_the_same_event_twice_enrolls_once(sender) -> None:
    deploy(wf_file(steps=[{"id": "hi", "type": "send_email", "template": "hi"}], templates=["hi"],
                   reentry="always"))
    contact = make_contact("dup@example.com")
    event = emit(contact, "signed_up", key="k1")
    # the pipeline sees the same event again (a sweeper re-queue): nothing new
    from contacts.pipeline import events_process

    events_process(event_ids=[event.pk])
    from automation.services import workflows_on_events

    workflows_on_events(events=[event])  # even re-evaluated directly: the (workflow, event) row is unique
    advance()
    assert Enrollment.objects.filter(contact=contact).count() == 1
    assert Message.objects.filter(contact=contact).count() == 1


def test_reentry_once_always_and_after(sender) -> None:
    steps = [{"id": "hi", "type": "send_email", "template": "hi"}]
    deploy(wf_file("once", steps=steps, templates=["hi"], reentry="once"))
    deploy(wf_file("always", steps=steps, templates=["hi"], reentry="always",
                   trigger={"type": "event", "event": "signed_up"}))
    deploy(wf_file("later", steps=steps, templates=["hi"], reentry={"after": "30d"}))
    contact = make_contact("again@example.com")
    for _ in range(2):
        emit(contact, "signed_up")
        advance()
    counts = {k: Enrollment.objects.filter(contact=contact, workflow__key=k).count()
              for k in ("once", "always", "later")}
    assert counts == {"once": 1, "always": 2, "later": 1}
    # thirty days later "after: 30d" lets them in again
    Enrollment.objects.filter(workflow__key="later").update(entered_at=timezone.now() - dt.timedelta(days=31))
    emit(contact, "signed_up")
    assert Enrollment.objects.filter(contact=contact, workflow__key="later").count() == 2
    assert Enrollment.objects.filter(contact=contact, workflow__key="once").count() == 1


def test_a_live_enrollment_blocks_reentry_even_with_always(sender) -> None:
    deploy(wf_file(steps=[{"id": "w", "type": "wait", "duration": "1d"}], reentry="always"))
    contact = make_contact("busy@example.com")
    emit(contact, "signed_up")
    advance()
    emit(contact, "signed_up")
    assert Enrollment.objects.filter(contact=contact).count() == 1


def test_the_goal_exits_waiting_contacts(sender) -> None:
    deploy(ISSUE_EXAMPLE)
    contact = make_contact("goal@example.com")
    emit(contact, "webinar_registered")
    advance()
    emit(contact, "demo_booked")
    assert status(contact) == ("goal_reached", "wait")
    advance(timezone.now() + dt.timedelta(days=3))
    assert Message.objects.filter(contact=contact).count() == 1  # only the welcome


def test_pausing_holds_enrollments_and_admits_no_one(sender) -> None:
    workflow = deploy(wf_file(steps=[{"id": "w", "type": "wait", "duration": "1h"},
                                     {"id": "hi", "type": "send_email", "template": "hi"}], templates=["hi"]))
    first = make_contact("first@example.com")
    emit(first, "signed_up")
    advance()
    workflow_set_paused(workflow=workflow, paused=True, actor="test")
    later = timezone.now() + dt.timedelta(hours=2)
    assert engine.enrollments_wake(now=later) == 0  # the tick skips paused workflows
    engine.enrollment_advance(enrollment_id=Enrollment.objects.get(contact=first).pk, now=later)  # a stray job
    emit(make_contact("second@example.com"), "signed_up")
    assert Message.objects.count() == 0
    assert Enrollment.objects.count() == 1
    assert status(first) == ("waiting", "w")
    workflow_set_paused(workflow=workflow, paused=False, actor="test")
    assert engine.enrollments_wake(now=later) == 1
    advance(later)
    assert status(first)[0] == "completed"
    assert Message.objects.filter(contact=first).count() == 1


def test_staging_runs_only_for_the_test_audience_and_redirects_its_email(sender, sink) -> None:
    # given production v1 and a staging v2 that sends a different email
    deploy(wf_file(steps=[{"id": "hi", "type": "send_email", "template": "v1"}], templates=["v1"]))
    seg = Segment.objects.create(name="QA team", definition={}, is_active=False)
    deploy(wf_file(steps=[{"id": "hi", "type": "send_email", "template": "v2"}], templates=["v2"],
                   test_segment="QA team"), stage_only=True)
    real = make_contact("real@example.com")
    tester = make_contact("tester@example.com", is_test=True)
    member = make_contact("member@example.com")
    SegmentMembership.objects.create(segment=seg, contact=member)
    for contact in (real, tester, member):
        emit(contact, "signed_up")
    advance()
    # then the real contact ran production; the test audience ran staging
    runs = {e.contact.email: (e.version.state, e.is_staging) for e in Enrollment.objects.select_related("version")}
    assert runs == {"real@example.com": ("production", False), "tester@example.com": ("staging", True),
                    "member@example.com": ("staging", True)}
    delivery_run_batch(sender=sender)
    got = sorted((r.rcpt_tos[0], r.header("Subject")) for r in sink.received)
    assert got == [("qa@leadflow.test", "[STAGING] v2 for"), ("qa@leadflow.test", "[STAGING] v2 for"),
                   ("real@example.com", "v1 for")]
    assert not any(r.rcpt_tos[0] in ("tester@example.com", "member@example.com") for r in sink.received)


def test_a_real_contact_never_runs_a_staging_only_workflow(sender) -> None:
    deploy(wf_file(steps=[{"id": "hi", "type": "send_email", "template": "hi"}], templates=["hi"]), stage_only=True)
    emit(make_contact("real@example.com"), "signed_up")
    emit(make_contact("qa@example.com", is_test=True), "signed_up")
    assert list(Enrollment.objects.values_list("contact__email", "is_staging")) == [("qa@example.com", True)]


def test_staging_email_without_a_staging_recipient_fails_instead_of_reaching_the_contact(sender) -> None:
    sender.staging_recipient = ""
    sender.save()
    deploy(wf_file(steps=[{"id": "hi", "type": "send_email", "template": "hi"}], templates=["hi"]), stage_only=True)
    tester = make_contact("qa@example.com", is_test=True)
    emit(tester, "signed_up")
    advance()
    assert Message.objects.count() == 0
    run = StepRun.objects.get()
    assert (run.status, status(tester)[0]) == ("failed", "failed")
    assert "staging recipient" in run.error


def test_a_step_runs_once_however_often_its_job_runs(sender) -> None:
    deploy(wf_file(steps=[{"id": "hi", "type": "send_email", "template": "hi"},
                          {"id": "score", "type": "adjust_score", "points": 5}], templates=["hi"]))
    contact = make_contact("once@example.com")
    emit(contact, "signed_up")
    enrollment = Enrollment.objects.get()
    for _ in range(3):
        engine.enrollments_advance(enrollment_ids=[enrollment.pk, enrollment.pk])
    # a crashed run replayed from the same position finds its StepRun and does not redo the step
    Enrollment.objects.filter(pk=enrollment.pk).update(status="active", step_id="hi", seq=0,
                                                       next_run_at=timezone.now())
    engine.enrollment_advance(enrollment_id=enrollment.pk)
    assert Message.objects.count() == 1
    assert ScoreEntry.objects.filter(contact=contact).count() == 1
    assert StepRun.objects.filter(enrollment=enrollment).count() == 2


def test_update_contact_adjust_score_and_exit(sender) -> None:
    deploy(wf_file(steps=[
        {"id": "upd", "type": "update_contact", "set": {"job_title": "CTO", "lifecycle_stage": "lead",
                                                         "attributes.plan": "pro"},
         "add_tags": ["webinar"], "add_lists": ["Nurtured"], "remove_tags": ["cold"]},
        {"id": "pts", "type": "adjust_score", "points": 15, "reason": "attended nurture"},
        {"id": "gate", "type": "branch", "if": {"score_above": 100}, "then": "never", "else": "bye"},
        {"id": "bye", "type": "exit"},
        {"id": "never", "type": "send_email", "template": "hi"},
    ], templates=["hi"]))
    CustomField.objects.create(key="plan", label="Plan")
    contact = make_contact("upd@example.com")
    contact.tags.add(Tag.objects.create(name="cold"))
    emit(contact, "signed_up")
    advance()
    contact.refresh_from_db()
    assert (contact.job_title, contact.lifecycle_stage, contact.attributes.get("plan")) == ("CTO", "lead", "pro")
    assert list(contact.tags.values_list("name", flat=True)) == ["webinar"]
    assert list(contact.lists.values_list("name", flat=True)) == ["Nurtured"]
    assert ContactList.objects.filter(name="Nurtured").exists()
    assert contact.score == 15
    assert ScoreEntry.objects.get(contact=contact).reason == "attended nurture"
    assert status(contact) == ("exited", "bye")
    assert Message.objects.count() == 0


def test_a_branch_after_adjust_score_sees_the_new_score(sender) -> None:
    deploy(wf_file(steps=[
        {"id": "pts", "type": "adjust_score", "points": 15},
        {"id": "gate", "type": "branch", "if": {"score_above": 10}, "then": "hot", "else": "cold"},
        {"id": "cold", "type": "exit"},
        {"id": "hot", "type": "exit"},
    ]))
    contact = make_contact("gate@example.com")
    emit(contact, "signed_up")
    advance()
    assert status(contact) == ("exited", "hot")  # the score read with the enrollment was 0


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []  # noqa: RUF012
    fail_next = 0

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        body = json.loads(raw)
        if _Hook.fail_next:
            _Hook.fail_next -= 1
            self.send_response(503)
            self.send_header("Retry-After", "1")
            self.end_headers()
            return
        _Hook.received.append({"body": body, "key": self.headers["Idempotency-Key"], "raw": raw,
                               "timestamp": self.headers["X-Leadflow-Timestamp"],
                               "signature": self.headers["X-Leadflow-Signature"]})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    _Hook.received, _Hook.fail_next = [], 0
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_webhook_and_notify_sales_go_through_the_outbox_with_retries(sender, hook, sink) -> None:
    deploy(wf_file(steps=[
        {"id": "hook", "type": "webhook", "url": hook, "payload": {"campaign": "spring"}},
        {"id": "tell", "type": "notify_sales", "email": "sales@example.com", "message": "Hot lead"},
    ]))
    contact = make_contact("hook@example.com", first_name="Hal")
    score_set(contact, 33, "C")
    emit(contact, "signed_up")
    with lazy_score_reads() as reads:
        advance()
    assert reads == []  # the payloads' score and grade came with the enrollment's query
    rows = {r.channel: r for r in WebhookDelivery.objects.all()}
    assert {(r.payload["contact"]["score"], r.payload["contact"]["grade"]) for r in rows.values()} == {(33, "C")}
    assert set(rows) == {"webhook"}  # the sales email is a campaigns Message (test_notify_sales_outbox.py)
    assert all(r.status == "pending" for r in rows.values())
    _Hook.fail_next = 1
    assert engine.webhook_deliver(delivery_id=rows["webhook"].pk) == "pending"  # 503: retried later
    retry = WebhookDelivery.objects.get(pk=rows["webhook"].pk)
    assert retry.attempts == 1
    assert "503" in retry.last_error
    assert retry.next_attempt_at > timezone.now()  # type: ignore[operator]
    assert engine.webhook_deliver(delivery_id=retry.pk) == "pending"  # not due yet: not claimed
    assert engine.webhook_deliver(delivery_id=retry.pk, now=retry.next_attempt_at) == "sent"
    assert engine.webhook_deliver(delivery_id=retry.pk, now=retry.next_attempt_at) == "sent"  # once only
    assert len(_Hook.received) == 1
    sent = _Hook.received[0]
    assert sent["body"]["campaign"] == "spring"
    assert sent["body"]["contact"]["email"] == "hook@example.com"
    assert sent["key"] == retry.idempotency_key
    # signed with the outgoing secret over the exact bytes received; any other body fails the check
    assert verify(outgoing_secret(), sent["timestamp"], sent["signature"], sent["raw"])
    assert not verify(outgoing_secret(), sent["timestamp"], sent["signature"], sent["raw"] + b" ")
    assert not verify("another secret", sent["timestamp"], sent["signature"], sent["raw"])
    delivery_run_batch(sender=sender)
    assert [r.rcpt_tos for r in sink.received] == [["sales@example.com"]]
    assert "Hot lead" in sink.received[0].header("Subject")


def test_staging_webhooks_are_dry_runs(sender, hook) -> None:
    deploy(wf_file(steps=[{"id": "hook", "type": "webhook", "url": hook}]), stage_only=True)
    emit(make_contact("qa@example.com", is_test=True), "signed_up")
    advance()
    assert WebhookDelivery.objects.get().status == DeliveryStatus.DRY_RUN
    assert engine.webhooks_wake() == 0
    assert _Hook.received == []


def test_crm_sync_step_records_what_it_did(sender) -> None:
    deploy(wf_file(steps=[{"id": "sync", "type": "crm_sync"}]))
    contact = make_contact("crm@example.com")
    emit(contact, "signed_up")
    advance()
    run = StepRun.objects.get()
    assert run.status == "succeeded"
    assert run.result["message"] == "no active CRM connection"


def test_branch_conditions(sender) -> None:
    vip = Segment.objects.create(name="VIP", definition={}, is_active=False)
    steps: list[dict[str, Any]] = [
        {"id": "seg", "type": "branch", "if": {"segment": "VIP"}, "then": "fld", "else": "no"},
        {"id": "fld", "type": "branch", "if": {"field": "attributes.plan", "op": "eq", "value": "pro"},
         "then": "scr", "else": "no"},
        {"id": "scr", "type": "branch", "if": {"score_above": 10}, "then": "yes", "else": "no"},
        {"id": "yes", "type": "update_contact", "add_tags": ["yes"], "next": "end"},
        {"id": "no", "type": "update_contact", "add_tags": ["no"]},
    ]
    deploy(wf_file(steps=steps))
    match = make_contact("match@example.com", attributes={"plan": "pro"})
    score_set(match, 11)
    SegmentMembership.objects.create(segment=vip, contact=match)
    other = make_contact("other@example.com", attributes={"plan": "pro"})
    score_set(other, 11)
    emit(match, "signed_up")
    emit(other, "signed_up")
    with lazy_score_reads() as reads:
        advance()
    assert reads == []  # score_above read the score with the enrollment, not one contact at a time
    assert list(match.tags.values_list("name", flat=True)) == ["yes"]
    assert list(other.tags.values_list("name", flat=True)) == ["no"]


def test_branch_on_the_email_being_opened(sender) -> None:
    deploy(wf_file(steps=[
        {"id": "hi", "type": "send_email", "template": "hi"},
        {"id": "w", "type": "wait", "duration": "1d"},
        {"id": "opened", "type": "branch", "if": {"email": "opened", "step": "hi"}, "then": "yes", "else": "end"},
        {"id": "yes", "type": "update_contact", "add_tags": ["opened"]},
    ], templates=["hi"]))
    reader, ignorer = make_contact("reader@example.com"), make_contact("ignorer@example.com")
    emit(reader, "signed_up")
    emit(ignorer, "signed_up")
    advance()
    Message.objects.filter(contact=reader).update(opened_at=timezone.now())
    advance(timezone.now() + dt.timedelta(days=1, minutes=1))
    assert list(reader.tags.values_list("name", flat=True)) == ["opened"]
    assert not ignorer.tags.exists()


def test_wait_until_a_date_and_a_window(sender) -> None:
    deploy(wf_file(steps=[
        {"id": "date", "type": "wait", "until": "2030-01-01T09:00:00+00:00"},
        {"id": "win", "type": "wait", "window": {"days": ["mon"], "start": 9, "end": 10}, "timezone": "contact"},
    ], timezone="Europe/Berlin"))
    contact = make_contact("tz@example.com", attributes={"timezone": "America/New_York"})
    emit(contact, "signed_up")
    advance()
    e = Enrollment.objects.get()
    assert (e.step_id, e.next_run_at) == ("date", dt.datetime(2030, 1, 1, 9, 0, tzinfo=dt.UTC))
    advance(e.next_run_at)
    e.refresh_from_db()
    # the next Monday 09:00 in New York (EST, UTC-5) after 2030-01-01 (a Tuesday)
    assert (e.step_id, e.next_run_at) == ("win", dt.datetime(2030, 1, 7, 14, 0, tzinfo=dt.UTC))


def test_segment_entered_and_score_reached_triggers(sender) -> None:
    vip = Segment.objects.create(name="Hot", definition={"field": "job_title", "op": "eq", "value": "CEO"})
    deploy(wf_file("on-seg", trigger={"type": "segment_entered", "segment": "Hot"},
                   steps=[{"id": "t", "type": "update_contact", "add_tags": ["seg"]}]))
    deploy(wf_file("on-score", trigger={"type": "score_reached", "score": 50},
                   steps=[{"id": "t", "type": "update_contact", "add_tags": ["score"]}]))
    ceo = make_contact("ceo@example.com", job_title="CEO")
    low = make_contact("low@example.com")
    high = make_contact("high@example.com")
    score_set(low, 10)
    score_set(high, 60)
    for contact in (ceo, low, high):
        emit(contact, "page_view")
    advance()
    assert vip.memberships.filter(contact=ceo).exists()
    assert sorted(Enrollment.objects.values_list("workflow__key", "contact__email")) == [
        ("on-score", "high@example.com"), ("on-seg", "ceo@example.com")]


def test_manual_enrollment(sender) -> None:
    workflow = deploy(wf_file(trigger={"type": "manual"}, steps=[{"id": "t", "type": "exit"}]))
    a, b = make_contact("a@example.com"), make_contact("b@example.com")
    emit(a, "signed_up")
    assert not Enrollment.objects.exists()
    with_ids = workflow_enroll(workflow=workflow, contact_ids=[a.pk, b.pk], actor="test")
    assert len(with_ids) == 2
    assert workflow_enroll(workflow=workflow, contact_ids=[a.pk], actor="test") == []  # reentry: once


def test_transient_failures_retry_then_fail_visibly(sender, monkeypatch) -> None:
    deploy(wf_file(steps=[{"id": "boom", "type": "crm_sync"}]))
    calls = []

    def broken(ctx: Any) -> Any:
        calls.append(ctx.key)
        raise ConnectionError("CRM down")

    monkeypatch.setitem(engine.HANDLERS, "crm_sync", broken)
    contact = make_contact("retry@example.com")
    emit(contact, "signed_up")
    now = timezone.now()
    for attempt in range(engine.MAX_ATTEMPTS):
        engine.enrollment_advance(enrollment_id=Enrollment.objects.get().pk, now=now)
        now += dt.timedelta(hours=1)
        run = StepRun.objects.get()
        assert run.attempt == attempt + 1
    assert (run.status, status(contact)[0]) == ("failed", "failed")
    assert "CRM down" in run.error
    assert len(set(calls)) == 1
    assert len(calls) == engine.MAX_ATTEMPTS


def test_the_wake_tick_claims_due_enrollments_and_enqueues_jobs_with_ids(
        sender, django_capture_on_commit_callbacks) -> None:
    deploy(wf_file(steps=[{"id": "w", "type": "wait", "duration": "1h"}, {"id": "x", "type": "exit"}]))
    for i in range(3):
        emit(make_contact(f"w{i}@example.com"), "signed_up")
    advance()
    queue = get_queue("default")
    queue.empty()
    assert engine.enrollments_wake(now=timezone.now()) == 0  # nothing due yet
    later = timezone.now() + dt.timedelta(hours=1, seconds=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert engine.enrollments_wake(now=later) == 3
    assert set(Enrollment.objects.values_list("status", flat=True)) == {"active"}
    jobs = queue.get_jobs()
    assert len(jobs) == 1
    assert jobs[0].id.startswith("wf-advance-")
    assert sorted(jobs[0].args[0]) == sorted(
        Enrollment.objects.values_list("pk", flat=True))
    assert engine.enrollments_wake(now=later) == 0  # claimed: a second tick takes nothing
    # a lost job: after the lease the tick claims them again
    assert engine.enrollments_wake(now=later + engine.LEASE + dt.timedelta(seconds=1)) == 3
    advance(later + 3 * engine.LEASE)
    assert set(Enrollment.objects.values_list("status", flat=True)) == {"exited"}


def test_enrollments_waking_together_advance_in_set_based_batches_exactly_once(
        sender, django_assert_max_num_queries) -> None:
    workflow = deploy(wf_file(trigger={"type": "manual"}, templates=["hi"], steps=[
        {"id": "w", "type": "wait", "duration": "1h"}, {"id": "hi", "type": "send_email", "template": "hi"}]))
    contacts = [make_contact(f"batch{i}@example.com") for i in range(40)]
    ids = workflow_enroll(workflow=workflow, contact_ids=[c.pk for c in contacts], actor="test")
    engine.enrollments_advance(enrollment_ids=ids)
    assert set(Enrollment.objects.values_list("status", "step_id")) == {("waiting", "w")}
    later = timezone.now() + dt.timedelta(hours=1, seconds=1)
    engine.enrollments_wake(now=later)
    # given 40 enrollments due at once, when one job advances them,
    # then a constant number of queries does it (not one transaction per enrollment)
    with django_assert_max_num_queries(30):
        assert engine.enrollments_advance(enrollment_ids=ids, now=later) == 40
    assert set(Enrollment.objects.values_list("status", flat=True)) == {"completed"}
    assert Message.objects.count() == 40
    waits = StepRun.objects.filter(step_id="w")
    assert {(r.status, r.result["next"]) for r in waits} == {("succeeded", "hi")}
    assert all("until" in r.result for r in waits)  # the merge kept what the wait recorded
    sends = {r.enrollment_id: r for r in StepRun.objects.filter(step_id="hi")}
    assert {r.status for r in sends.values()} == {"succeeded"}
    by_key = dict(Message.objects.values_list("idempotency_key", "id"))
    assert all(r.result["message_id"] == by_key[f"wf:{r.idempotency_key}"] for r in sends.values())
    # a replayed job, and a crash replayed from before the send, queue nothing twice
    engine.enrollments_advance(enrollment_ids=ids + ids, now=later)
    Enrollment.objects.filter(pk__in=ids[:5]).update(status="active", step_id="hi", seq=1, next_run_at=later)
    engine.enrollments_advance(enrollment_ids=ids, now=later)
    assert Message.objects.count() == 40
    assert StepRun.objects.count() == 80
    assert set(Enrollment.objects.values_list("status", flat=True)) == {"completed"}


def test_a_burst_sends_and_starts_its_fixed_waits_set_based_then_each_wakes_once(
        sender, django_assert_max_num_queries) -> None:
    # given the webinar workflow of docs/workflows.md (send, wait 2 days, branch on attendance)
    workflow = deploy(wf_file(trigger={"type": "manual"}, templates=["welcome", "thanks", "replay"], steps=[
        {"id": "welcome", "type": "send_email", "template": "welcome"},
        {"id": "wait", "type": "wait", "duration": "2d"},
        {"id": "attended", "type": "branch", "if": {"event": "webinar_attended", "within": "7d"},
         "then": "thanks", "else": "replay"},
        {"id": "thanks", "type": "send_email", "template": "thanks", "next": "end"},
        {"id": "replay", "type": "send_email", "template": "replay"}]))
    contacts = [make_contact(f"reg{i}@example.com") for i in range(40)]
    ids = workflow_enroll(workflow=workflow, contact_ids=[c.pk for c in contacts], actor="test")
    now = timezone.now()
    # when one job advances 40 new registrations, then a constant number of queries sends their
    # welcome emails and starts their waits (not a transaction per enrollment at the wait)
    with django_assert_max_num_queries(30):
        assert engine.enrollments_advance(enrollment_ids=ids, now=now) == 40
    until = now + dt.timedelta(days=2)
    assert set(Enrollment.objects.values_list("status", "step_id", "next_run_at")) == {("waiting", "wait", until)}
    waits = StepRun.objects.filter(step_id="wait")
    assert {(r.status, r.step_type, r.result["until"], r.result["next"]) for r in waits} == {
        ("waiting", "wait", until.isoformat(), "attended")}
    assert waits.count() == 40
    assert Message.objects.count() == 40
    # a replayed job starts nothing twice
    engine.enrollments_advance(enrollment_ids=ids, now=now)
    assert StepRun.objects.count() == 80
    assert Message.objects.count() == 40
    # and two days later each wakes once and takes its branch
    emit(contacts[0], "webinar_attended", at=now + dt.timedelta(hours=1))
    later = until + dt.timedelta(seconds=1)
    engine.enrollments_wake(now=later)
    engine.enrollments_advance(enrollment_ids=ids, now=later)
    assert set(Enrollment.objects.values_list("status", flat=True)) == {"completed"}
    assert Message.objects.filter(template__key="thanks").count() == 1
    assert Message.objects.filter(template__key="replay").count() == 39
    assert {r.status for r in StepRun.objects.filter(step_id="wait")} == {"succeeded"}


def test_a_batch_mixes_set_based_and_one_by_one_steps(sender) -> None:
    deploy(wf_file(templates=["hi"], steps=[
        {"id": "hi", "type": "send_email", "template": "hi"},
        {"id": "score", "type": "adjust_score", "points": 3},
        {"id": "again", "type": "send_email", "template": "hi"}]))
    real, tester = make_contact("real@example.com"), make_contact("qa-batch@example.com", is_test=True)
    emit(real, "signed_up")
    emit(tester, "signed_up")
    advance()
    assert set(Enrollment.objects.values_list("status", flat=True)) == {"completed"}
    assert Message.objects.filter(contact=real).count() == 2
    assert ScoreEntry.objects.filter(contact=real).count() == 1
    # the test contact runs production here too (no staging version): its email is its own
    assert set(Message.objects.filter(contact=tester).values_list("redirect_to", flat=True)) == {""}


def test_event_triggered_first_steps_run_right_after_the_event_jobs_commit(
        sender, monkeypatch, django_capture_on_commit_callbacks) -> None:
    deploy(wf_file(templates=["hi"], steps=[{"id": "hi", "type": "send_email", "template": "hi"}]))
    monkeypatch.setattr(engine, "get_current_job", lambda: object())  # as inside the event job
    queue = get_queue("default")
    queue.empty()
    with django_capture_on_commit_callbacks() as after_commit:
        emit(make_contact("fast@example.com"), "signed_up")
    assert Enrollment.objects.get().status == "active"  # nothing ran inside the event's transaction
    for callback in after_commit:  # COMMIT (run by hand: delivery's own kick would defer itself forever)
        callback()
    assert status(Contact.objects.get(email="fast@example.com"))[0] == "completed"
    assert Message.objects.count() == 1
    assert not [j for j in queue.get_jobs() if j.id.startswith("wf-advance-")]  # no second job, no tick


def test_a_contact_edit_that_enters_a_segment_fires_segment_entered_triggers(sender) -> None:
    hot = Segment.objects.create(name="Hot", definition={"field": "job_title", "op": "eq", "value": "CEO"})
    deploy(wf_file("promote", steps=[{"id": "title", "type": "update_contact", "set": {"job_title": "CEO"}}]))
    deploy(wf_file("on-seg", trigger={"type": "segment_entered", "segment": "Hot"},
                   steps=[{"id": "t", "type": "update_contact", "add_tags": ["seg"]}]))
    contact = make_contact("riser@example.com", job_title="Analyst")
    emit(contact, "signed_up")  # not a member yet: no segment event from the event itself
    assert list(Enrollment.objects.values_list("workflow__key", flat=True)) == ["promote"]
    advance()  # the step edits the contact; contacts_changed updates segments, emitting segment_entered
    advance()  # the new enrollment's first step (a worker runs it after COMMIT)
    assert hot.memberships.filter(contact=contact).exists()
    assert sorted(Enrollment.objects.values_list("workflow__key", "status")) == [
        ("on-seg", "completed"), ("promote", "completed")]
    assert contact.tags.filter(name="seg").exists()
