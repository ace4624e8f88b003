"""Sending a broadcast through the outbox: each contact once whatever is retried, pause, resume and
cancel without losing or repeating a send, and the bad inputs (empty audience, a schedule in the
past, a template that fails for some contacts, a sender paused mid-send)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from broadcasts.models import BroadcastRecipient, BroadcastStatus, ScheduleKind
from broadcasts.services import (
    CANCEL_REASON,
    HOLD_REASON,
    broadcast_cancel,
    broadcast_messages,
    broadcast_pause,
    broadcast_progress,
    broadcast_queue,
    broadcast_resume,
    broadcast_save,
    broadcast_send,
    broadcast_warnings,
    broadcasts_tick,
    local_send_time,
    queue_chunk,
)
from broadcasts.tests.conftest import approve, make_broadcast, make_contacts, make_template, work
from broadcasts.timezones import country_zone
from campaigns.delivery import delivery_run, delivery_run_batch
from campaigns.models import Message, MessageStatus, SenderProfile, SuppressionReason
from campaigns.services import suppression_add
from consent.models import Topic, TopicSubscription
from contacts.models import ConsentStatus, Contact
from core.queues import get_connection

pytestmark = pytest.mark.django_db


def received_by_address(sink) -> Counter[str]:  # noqa: ANN001
    return Counter(r.rcpt_tos[0] for r in sink.received)


@pytest.mark.django_db(transaction=True)
def test_each_contact_gets_it_once_whatever_is_retried_or_restarted(staged_sender, tester, sink):
    # given an approved broadcast to 30 contacts
    contacts = make_contacts(30)
    broadcast = approve(make_broadcast(staged_sender, contacts))
    sink.state.received.clear()  # (the test send)
    # when it is sent, and its jobs are run twice over, Redis is flushed mid-way and the tick kicks again
    broadcast_send(broadcast=broadcast, actor=None)
    assert broadcast.status == BroadcastStatus.SENDING
    assert broadcast.recipients_total == 30
    queue_chunk(broadcast_id=broadcast.pk, size=10)
    get_connection().flushdb()  # the queue job and the delivery kicks are lost
    broadcasts_tick()  # the tick finds the half-queued broadcast in the database and kicks it again
    work()
    assert received_by_address(sink) == Counter({c.email: 1 for c in contacts})
    # and once more, as a retried job and a late tick would
    assert broadcast_queue(broadcast_id=broadcast.pk) == 0
    assert queue_chunk(broadcast_id=broadcast.pk) == 0
    broadcasts_tick()
    work()
    # then every contact got it exactly once, and the broadcast is fully queued
    assert received_by_address(sink) == Counter({c.email: 1 for c in contacts})
    assert Message.objects.filter(source="broadcast:news").count() == 30
    assert set(broadcast_messages(broadcast.pk).values_list("status", flat=True)) == {MessageStatus.SENT}
    broadcast.refresh_from_db()
    assert broadcast.status == BroadcastStatus.QUEUED
    progress = broadcast_progress(broadcast)
    assert (progress.total, progress.sent, progress.queued, progress.not_queued) == (30, 30, 0, 0)


def test_pause_holds_queued_messages_and_resume_sends_the_rest_once(staged_sender, tester, sink):
    contacts = make_contacts(20)
    broadcast = approve(make_broadcast(staged_sender, contacts))
    sink.state.received.clear()
    broadcast_send(broadcast=broadcast, actor=None)
    queue_chunk(broadcast_id=broadcast.pk, size=5)
    delivery_run_batch(sender=staged_sender, batch_size=2)
    assert len(sink.received) == 2
    # when it is paused mid-send
    held = broadcast_pause(broadcast=broadcast, actor="ops", reason="checking a link")
    # then its queued messages are held (deferred, not failed), and nothing more is queued or sent
    assert held == 3
    assert Message.objects.filter(status=MessageStatus.DEFERRED, reason=HOLD_REASON).count() == 3
    assert queue_chunk(broadcast_id=broadcast.pk) == 0
    delivery_run(sender_id=staged_sender.pk, max_seconds=5)
    assert len(sink.received) == 2
    assert broadcast_progress(broadcast).held == 3
    # when it is resumed, the held ones and the 15 not queued yet go, each once
    assert broadcast_resume(broadcast=broadcast, actor="ops") == 3
    assert broadcast.status == BroadcastStatus.SENDING
    broadcast_queue(broadcast_id=broadcast.pk)
    delivery_run(sender_id=staged_sender.pk, max_seconds=10)
    assert received_by_address(sink) == Counter({c.email: 1 for c in contacts})


def test_cancel_cancels_what_was_not_sent_with_the_reason(staged_sender, tester, sink):
    contacts = make_contacts(10)
    broadcast = approve(make_broadcast(staged_sender, contacts))
    sink.state.received.clear()
    broadcast_send(broadcast=broadcast, actor=None)
    queue_chunk(broadcast_id=broadcast.pk, size=5)
    delivery_run_batch(sender=staged_sender, batch_size=2)
    # a cancel needs a reason
    with pytest.raises(ValidationError, match="Say why"):
        broadcast_cancel(broadcast=broadcast, actor="ops", reason="  ")
    # when it is cancelled
    assert broadcast_cancel(broadcast=broadcast, actor="ops", reason="wrong date in the subject") == 3
    # then the queued ones are cancelled with the reason, the rest never get a message, nothing more goes
    cancelled = Message.objects.filter(status=MessageStatus.SUPPRESSED, reason=CANCEL_REASON)
    assert cancelled.count() == 3
    assert all("wrong date in the subject" in m.last_error for m in cancelled)
    assert queue_chunk(broadcast_id=broadcast.pk) == 0
    broadcasts_tick()
    delivery_run(sender_id=staged_sender.pk, max_seconds=5)
    assert len(sink.received) == 2
    progress = broadcast_progress(broadcast)
    assert (progress.sent, progress.cancelled, progress.not_queued) == (2, 3, 5)
    with pytest.raises(ValidationError, match="cannot be cancelled"):
        broadcast_cancel(broadcast=broadcast, actor="ops", reason="again")


def test_an_empty_audience_is_refused_with_a_clear_message(staged_sender, tester):
    broadcast = make_broadcast(staged_sender, [tester])  # test contacts are never in the real audience
    with pytest.raises(ValidationError, match="The audience is empty: list news have no contacts left"):
        approve(broadcast)
    assert broadcast.status == BroadcastStatus.DRAFT


def test_a_schedule_in_the_past_is_refused_and_a_future_one_starts_when_due(staged_sender, tester, sink):
    broadcast = approve(make_broadcast(staged_sender, make_contacts(3), schedule=ScheduleKind.AT,
                                       send_at=timezone.now() - dt.timedelta(hours=1)))
    with pytest.raises(ValidationError, match="is in the past"):
        broadcast_send(broadcast=broadcast, actor=None)
    broadcast.refresh_from_db()
    assert broadcast.status == BroadcastStatus.APPROVED
    # a time in the future schedules it; the tick starts it once due, not before
    later = timezone.now() + dt.timedelta(hours=2)
    type(broadcast).objects.filter(pk=broadcast.pk).update(send_at=later)
    broadcast.refresh_from_db()
    # the schedule is part of the approval (review finding 9): saved, it is approved again
    broadcast = approve(broadcast_save(broadcast=broadcast, actor=None))
    broadcast_send(broadcast=broadcast, actor=None)
    assert broadcast.status == BroadcastStatus.SCHEDULED
    assert broadcasts_tick()["started"] == 0
    assert broadcasts_tick(now=later + dt.timedelta(seconds=1))["started"] == 1
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.recipients_total) == (BroadcastStatus.SENDING, 3)


def test_a_template_that_fails_for_some_contacts_fails_them_alone(staged_sender, tester, sink, settings):
    settings.EMAIL_RENDER_MAX_CHARS = 20_000
    template = make_template("notes", html="<p>Your note: {{ attributes.note }}</p>")
    contacts = make_contacts(4)
    contacts[1].attributes = {"note": "x" * 50_000}  # renders past EMAIL_RENDER_MAX_CHARS
    contacts[1].save()
    broadcast = approve(make_broadcast(staged_sender, contacts, templates=[template]))
    sink.state.received.clear()
    broadcast_send(broadcast=broadcast, actor=None)
    broadcast_queue(broadcast_id=broadcast.pk)
    delivery_run(sender_id=staged_sender.pk, max_seconds=10)
    failed = broadcast_messages(broadcast.pk).get(status=MessageStatus.FAILED)
    assert (failed.contact_id, failed.reason) == (contacts[1].pk, "render_error")
    assert "EMAIL_RENDER_MAX_CHARS" in failed.last_error
    assert received_by_address(sink) == Counter({c.email: 1 for c in contacts if c.pk != contacts[1].pk})
    assert broadcast_progress(broadcast).failed == 1


def test_a_sender_paused_mid_send_holds_the_rest_and_says_so(staged_sender, tester, sink):
    contacts = make_contacts(6)
    broadcast = approve(make_broadcast(staged_sender, contacts))
    sink.state.received.clear()
    broadcast_send(broadcast=broadcast, actor=None)
    broadcast_queue(broadcast_id=broadcast.pk)
    delivery_run_batch(sender=staged_sender, batch_size=2)
    SenderProfile.objects.filter(pk=staged_sender.pk).update(is_paused=True)
    broadcast.refresh_from_db()
    delivery_run(sender_id=staged_sender.pk, max_seconds=5)
    assert len(sink.received) == 2
    [warning] = broadcast_warnings(broadcast)
    assert warning.startswith("Sender Main is paused: 4 message(s) of this broadcast wait")
    SenderProfile.objects.filter(pk=staged_sender.pk).update(is_paused=False)
    delivery_run(sender_id=staged_sender.pk, max_seconds=5)
    assert received_by_address(sink) == Counter({c.email: 1 for c in contacts})


def test_in_each_contacts_time_zone_messages_wait_for_their_local_window(staged_sender, tester, sink):
    now = timezone.now()
    tomorrow = now + dt.timedelta(days=1)
    de, us = make_contacts(1, "de", country="DE")[0], make_contacts(1, "us", country="US")[0]
    broadcast = approve(make_broadcast(staged_sender, [de, us], schedule=ScheduleKind.LOCAL, send_at=tomorrow,
                                       window_start=dt.time(9), window_end=dt.time(11)))
    broadcast_send(broadcast=broadcast, actor=None, now=now)
    broadcast_queue(broadcast_id=broadcast.pk)
    due = dict(BroadcastRecipient.objects.values_list("contact_id", "message__next_attempt_at"))
    day = tomorrow.date()
    assert due[de.pk] == dt.datetime.combine(day, dt.time(9), tzinfo=country_zone("DE", "UTC"))
    assert due[us.pk] == dt.datetime.combine(day, dt.time(9), tzinfo=country_zone("US", "UTC"))
    delivery_run(sender_id=staged_sender.pk, max_seconds=5)
    assert len(sink.received) == 1  # the test send only: both wait for tomorrow's window


def test_the_local_window_already_over_somewhere_goes_the_next_day(staged_sender):
    broadcast = make_broadcast(staged_sender, [], schedule=ScheduleKind.LOCAL,
                               send_at=dt.datetime(2026, 6, 1, 8, tzinfo=dt.UTC),
                               window_start=dt.time(9), window_end=dt.time(11))
    tokyo = country_zone("JP", "UTC")
    now = dt.datetime(2026, 6, 1, 8, tzinfo=dt.UTC)  # 17:00 in Tokyo: today's window is over there
    assert local_send_time(broadcast, tokyo, now) == dt.datetime(2026, 6, 2, 9, tzinfo=tokyo)
    inside = dt.datetime(2026, 6, 1, 9, 30, tzinfo=country_zone("GB", "UTC"))
    assert local_send_time(broadcast, country_zone("GB", "UTC"), inside) is None  # in the window: at once


def test_the_outbox_rules_apply_to_a_broadcast_as_to_every_email(staged_sender, tester, sink):
    # given a topic the template goes under, and five contacts: one withdrew consent, one's address
    # hard-bounced, one left the topic, one already had this week's one marketing email
    topic = Topic.objects.create(key="news", name="News")
    template = make_template(topic=topic)
    contacts = make_contacts(5)
    Contact.objects.filter(pk=contacts[0].pk).update(consent_status=ConsentStatus.WITHDRAWN)
    suppression_add(email=contacts[1].email, reason=SuppressionReason.HARD_BOUNCE, source="test")
    TopicSubscription.objects.create(contact=contacts[2], topic=topic, subscribed=False)
    SenderProfile.objects.filter(pk=staged_sender.pk).update(frequency_cap=1, frequency_days=7)
    Message.objects.create(contact=contacts[3], sender=staged_sender, template=template, kind="marketing",
                           idempotency_key="earlier", status=MessageStatus.SENT, sent_at=timezone.now())
    broadcast = approve(make_broadcast(staged_sender, contacts, templates=[template]))
    sink.state.received.clear()
    # when it is sent
    broadcast_send(broadcast=broadcast, actor=None)
    broadcast_queue(broadcast_id=broadcast.pk)
    delivery_run(sender_id=staged_sender.pk, max_seconds=10)
    # then each rule stops its contact, with its reason, and only the fifth gets it
    outcome = {contact_id: (status, reason) for contact_id, status, reason in
               broadcast_messages(broadcast.pk).values_list("contact_id", "status", "reason")}
    assert outcome == {contacts[0].pk: (MessageStatus.SUPPRESSED, "unsubscribed"),
                       contacts[1].pk: (MessageStatus.SUPPRESSED, SuppressionReason.HARD_BOUNCE),
                       contacts[2].pk: (MessageStatus.SUPPRESSED, "topic_unsubscribed"),
                       contacts[3].pk: (MessageStatus.SUPPRESSED, "frequency_cap"),
                       contacts[4].pk: (MessageStatus.SENT, "")}
    assert received_by_address(sink) == Counter({contacts[4].email: 1})
    assert broadcast_progress(broadcast).suppressed == 4
