"""An enrollment takes its triggering event's correlation id (a manual entry: the request's), and
its step runs and messages take the enrollment's, whichever job runs them."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from automation import engine
from automation.models import Enrollment, StepRun
from automation.services import workflow_enroll
from automation.tests.conftest import advance, deploy, make_contact, make_template, wf_file
from campaigns.models import Message
from campaigns.services import QueueItem, messages_queue
from contacts.models import Contact, Event
from contacts.pipeline import events_process
from core.logs import correlation_scope

pytestmark = pytest.mark.django_db

EMAIL_THEN_WAIT = [{"id": "hello", "type": "send_email", "template": "welcome"},
                   {"id": "later", "type": "wait", "duration": "1d"}]


def post(contact: Contact, correlation_id: str, event_type: str = "signed_up") -> Event:
    """An event as the API stores it, processed by a job with an id of its own."""
    event = Event.objects.create(contact=contact, event_type=event_type, occurred_at=timezone.now(),
                                 source="api:test", correlation_id=correlation_id)
    with correlation_scope("events-job-77"):
        events_process(event_ids=[event.pk])
    return event


def test_an_enrollment_takes_its_events_id_not_the_jobs(sender: Any) -> None:
    deploy(wf_file(steps=EMAIL_THEN_WAIT, templates=["welcome"]))
    ann = make_contact("ann@example.com")
    post(ann, "req-ann")
    assert Enrollment.objects.get(contact=ann).correlation_id == "req-ann"


def test_an_event_without_an_id_gives_an_enrollment_without_one(sender: Any) -> None:
    deploy(wf_file(steps=EMAIL_THEN_WAIT, templates=["welcome"]))
    bob = make_contact("bob@example.com")
    post(bob, "")  # e.g. a became_mql event of scoring: the job's id would name the wrong cause
    assert Enrollment.objects.get(contact=bob).correlation_id == ""


def test_a_manual_entry_takes_the_requests_id(sender: Any) -> None:
    workflow = deploy(wf_file(steps=EMAIL_THEN_WAIT, templates=["welcome"], trigger={"type": "manual"}))
    cy = make_contact("cy@example.com")
    with correlation_scope("admin-request-5"):
        workflow_enroll(workflow=workflow, contact_ids=[cy.pk], actor="test")
    assert Enrollment.objects.get(contact=cy).correlation_id == "admin-request-5"


def test_set_based_steps_give_messages_and_step_runs_their_enrollments_id(sender: Any) -> None:
    deploy(wf_file(steps=EMAIL_THEN_WAIT, templates=["welcome"]))
    ann, bob = make_contact("ann@example.com"), make_contact("bob@example.com")
    post(ann, "req-ann")
    post(bob, "req-bob")
    with correlation_scope("wake-tick-job"):
        advance()  # one set-based batch for both
    assert dict(Message.objects.values_list("contact__email", "correlation_id")) == {
        "ann@example.com": "req-ann", "bob@example.com": "req-bob"}
    assert dict(StepRun.objects.filter(step_id="hello").values_list("enrollment__contact__email",
                                                                     "correlation_id")) == {
        "ann@example.com": "req-ann", "bob@example.com": "req-bob"}


def test_one_by_one_steps_give_their_rows_the_enrollments_id(sender: Any) -> None:
    deploy(wf_file(steps=EMAIL_THEN_WAIT, templates=["welcome"]))
    ann = make_contact("ann@example.com")
    post(ann, "req-ann")
    enrollment = Enrollment.objects.get(contact=ann)
    with correlation_scope("some-other-job"):
        engine.enrollment_advance(enrollment_id=enrollment.pk)
    assert Message.objects.get(contact=ann).correlation_id == "req-ann"
    assert set(StepRun.objects.filter(enrollment=enrollment).values_list("step_id", "correlation_id")) == {
        ("hello", "req-ann"), ("later", "req-ann")}


def test_a_message_without_a_cause_takes_the_current_request_or_jobs_id(db: None, sender: Any) -> None:
    template = make_template()
    contact = make_contact("dee@example.com")
    with correlation_scope("api-send-3"):
        messages_queue(template=template, items=[QueueItem(contact.pk, "k1"),
                                                 QueueItem(contact.pk, "k2", correlation_id="its-cause")])
    assert dict(Message.objects.values_list("idempotency_key", "correlation_id")) == {
        "k1": "api-send-3", "k2": "its-cause"}
