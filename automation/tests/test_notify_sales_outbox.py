"""notify_sales emails go through the outbox (issue 15, item 5): one internal campaigns Message per
step run, delivered by the throttled delivery worker to the sales address without the contact's
footer, tracking or List-Unsubscribe; the sales address's suppression counts, the lead's does not."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from automation import engine
from automation.models import Enrollment, StepRun, WebhookDelivery
from automation.tests.conftest import advance, deploy, emit, make_contact, wf_file
from campaigns.delivery import delivery_run_batch
from campaigns.models import Message, Suppression, SuppressionReason, email_hash
from campaigns.services import BounceReport, bounces_record, contact_unsubscribe
from contacts.models import ConsentStatus, Event

pytestmark = pytest.mark.django_db

NOTIFY = {"id": "tell", "type": "notify_sales", "email": "Sales@Example.com", "message": "Hot lead"}


def run_notify(email: str = "lead@example.com", **fields: Any) -> Any:
    deploy(wf_file(steps=[NOTIFY]))
    contact = make_contact(email, first_name="Lea", **fields)
    emit(contact, "signed_up")
    advance()
    return contact


def test_the_step_queues_one_internal_message_sent_without_tracking_or_unsubscribe(sender, sink) -> None:
    contact = run_notify()
    message = Message.objects.get()
    assert (message.internal, message.contact_id, message.to_email) == (True, contact.pk, "sales@example.com")
    assert WebhookDelivery.objects.count() == 0  # no side channel around the outbox any more
    assert StepRun.objects.get().result["deliveries"]["message_id"] == message.pk
    delivery_run_batch(sender=sender)
    assert [r.rcpt_tos for r in sink.received] == [["sales@example.com"]]
    got = sink.received[0]
    assert got.header("Subject") == "[Leadflow] Hot lead"
    assert got.header("List-Unsubscribe") == ""
    assert got.header("List-Unsubscribe-Post") == ""
    raw = got.data.decode("utf-8", errors="replace")
    assert "/e/" not in raw  # no open pixel, click redirect or unsubscribe link of the lead's
    assert "nsubscribe" not in raw
    text = got.message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith("Hot lead\n\n")
    assert "lead@example.com" in text
    assert Message.objects.get().status == "sent"


def test_a_retried_step_sends_once(sender, sink) -> None:
    run_notify()
    enrollment, run = Enrollment.objects.get(), StepRun.objects.get()
    # the same step run again (a retry after a transient failure, a replayed job): same key
    StepRun.objects.filter(pk=run.pk).update(status="retrying")
    seq = int(run.idempotency_key.rsplit(":", 1)[1])
    Enrollment.objects.filter(pk=enrollment.pk).update(status="active", step_id="tell", seq=seq,
                                                       next_run_at=timezone.now())
    engine.enrollment_advance(enrollment_id=enrollment.pk)
    assert StepRun.objects.get().attempt == 2  # it did run again
    assert Message.objects.count() == 1
    delivery_run_batch(sender=sender)
    delivery_run_batch(sender=sender)
    assert len(sink.received) == 1


def test_a_suppressed_sales_address_is_not_mailed_and_says_why(sender, sink) -> None:
    Suppression.objects.create(email_hash=email_hash("sales@example.com"), reason=SuppressionReason.HARD_BOUNCE)
    run_notify()
    delivery_run_batch(sender=sender)
    assert sink.received == []
    message = Message.objects.get()
    assert (message.status, message.reason) == ("suppressed", "hard_bounce")
    assert "Hard bounce" in message.last_error


def test_a_lead_who_unsubscribed_still_triggers_the_sales_email(sender, sink) -> None:
    deploy(wf_file(steps=[NOTIFY]))
    contact = make_contact("gone@example.com")
    contact_unsubscribe(contact=contact, source="test")
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.WITHDRAWN
    assert Suppression.objects.filter(email_hash=email_hash("gone@example.com")).exists()
    emit(contact, "signed_up")
    advance()
    delivery_run_batch(sender=sender)
    assert [r.rcpt_tos for r in sink.received] == [["sales@example.com"]]


def test_staging_sends_to_the_staging_recipient_labelled(sender, sink) -> None:
    deploy(wf_file(steps=[NOTIFY]), stage_only=True)
    emit(make_contact("qa@example.com", is_test=True), "signed_up")
    advance()
    delivery_run_batch(sender=sender)
    assert [(r.rcpt_tos, r.header("Subject")) for r in sink.received] == [
        (["qa@leadflow.test"], "[STAGING] [Leadflow] Hot lead")]


def test_a_complaint_from_the_sales_address_leaves_the_lead_alone(sender, sink) -> None:
    contact = run_notify()
    delivery_run_batch(sender=sender)
    message = Message.objects.get()
    result = bounces_record(reports=[BounceReport(email="sales@example.com", kind="complaint",
                                                  leadflow_id=message.pk)], source="test")
    assert result.recorded == 1
    contact.refresh_from_db()
    assert contact.consent_status == ConsentStatus.GRANTED  # the lead did not complain: staff did
    assert not Event.objects.filter(contact=contact, event_type="email_complained").exists()
    assert Suppression.objects.filter(email_hash=email_hash("sales@example.com")).exists()
