"""Delivery shares the outbox between causes (issue 25): a signup's email does not wait behind a
burst's, and a delivery job hands the worker over between batches when other queues wait."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import override_settings
from django.utils import timezone

from campaigns import delivery
from campaigns.delivery import delivery_run, messages_claim
from campaigns.models import Message, MessageStatus
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact
from core.queues import get_queue

pytestmark = pytest.mark.django_db


def queue_burst_then_signups(template, burst: int, signups: int) -> tuple[list[int], list[int]]:  # noqa: ANN001
    """`burst` messages of one API call (one correlation id), then `signups` of one request each."""
    big = [make_contact(f"burst{i}@example.com") for i in range(burst)]
    small = [make_contact(f"signup{i}@example.com") for i in range(signups)]
    burst_ids = sorted(messages_queue(template=template, items=[
        QueueItem(c.pk, f"b:{c.pk}", correlation_id="call-1") for c in big]))
    signup_ids = [messages_queue(template=template, items=[QueueItem(c.pk, f"s:{c.pk}", correlation_id=f"req-{i}")])[0]
                  for i, c in enumerate(small)]
    return burst_ids, signup_ids


def test_a_claim_takes_signups_queued_behind_a_burst_first(sender, template, sink) -> None:
    # given 60 emails of a burst, then 3 signups' emails queued after them
    burst_ids, signup_ids = queue_burst_then_signups(template, 60, 3)
    # when a worker claims a batch of 20
    claimed = messages_claim(sender_id=sender.pk, limit=20, now=timezone.now())
    # then the signups are in it, first, and the burst fills the rest in its own order
    assert [m.pk for m in claimed] == signup_ids + burst_ids[:17]
    # and a second claim takes the next of the burst: nothing twice, nothing skipped
    second = messages_claim(sender_id=sender.pk, limit=20, now=timezone.now())
    assert [m.pk for m in second] == burst_ids[17:37]
    assert Message.objects.filter(status=MessageStatus.SENDING).count() == 40


def test_causes_take_turns_smallest_first() -> None:
    from campaigns.delivery import fair_order

    rows = [(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b"), (6, "c"), (7, ""), (8, "")]
    # c (1 message), then b and the messages without a cause (2 each), then a (3), in turns
    assert fair_order(rows) == [6, 4, 7, 1, 5, 8, 2, 3]
    assert fair_order(rows + [(8, "")]) == fair_order(rows)  # an id seen twice goes once


@override_settings(DELIVERY_BATCH_SIZE=5)
def test_a_delivery_job_hands_over_after_a_batch_when_other_queues_wait(
        sender, template, sink, monkeypatch, django_capture_on_commit_callbacks) -> None:
    # given 12 due emails and an event job waiting on the same worker's queues
    queue_burst_then_signups(template, 12, 0)
    get_queue("delivery").empty()
    with django_capture_on_commit_callbacks(execute=True):  # django-rq enqueues after COMMIT
        get_queue("events").enqueue("contacts.tasks_events.events_process_pending")
    monkeypatch.setattr(delivery, "get_current_job", lambda: object(), raising=False)  # as in a worker job
    # when the delivery job runs
    with django_capture_on_commit_callbacks() as after_commit:
        delivery_run(sender_id=sender.pk, slot=0)
    # then it sent one batch and kicked a fresh job for the rest (after COMMIT; run by hand, it
    # would defer itself inside the test's transaction) instead of holding the worker
    assert len(sink.received) == 5
    assert Message.objects.filter(status=MessageStatus.QUEUED).count() == 7
    assert after_commit
    # and with no other work waiting, a job delivers all that is due
    get_queue("events").empty()
    delivery_run(sender_id=sender.pk, slot=0)
    assert len(sink.received) == 12
    assert sorted(r.rcpt_tos[0] for r in sink.received) == sorted(f"burst{i}@example.com" for i in range(12))


def test_signups_behind_a_backlog_longer_than_the_window_still_go_in_the_next_batch(
        sender, template, sink, monkeypatch) -> None:
    # given a campaign-sized backlog (longer than the claim looks at), then two signups
    monkeypatch.setattr(delivery, "FAIR_WINDOW", 2, raising=False)  # a window of 10 for batches of 5
    burst_ids, signup_ids = queue_burst_then_signups(template, 30, 2)
    # when a batch of 5 is claimed, then the signups (the newest arrivals) are in it, first
    claimed = messages_claim(sender_id=sender.pk, limit=5, now=timezone.now())
    assert [m.pk for m in claimed] == signup_ids + burst_ids[:3]


@override_settings(DELIVERY_BATCH_SIZE=5)
def test_a_delivery_only_worker_does_not_hand_over_to_queues_it_does_not_serve(
        sender, template, sink, monkeypatch, django_capture_on_commit_callbacks) -> None:
    from types import SimpleNamespace

    from rq.worker import SimpleWorker

    from core.queues import get_connection

    # given a worker serving only `delivery` (registered in Redis as RQ does), and an event job waiting
    worker = SimpleWorker([get_queue("delivery")], connection=get_connection())
    worker.register_birth()
    queue_burst_then_signups(template, 12, 0)
    with django_capture_on_commit_callbacks(execute=True):
        get_queue("events").enqueue("contacts.tasks_events.events_process_pending")
    monkeypatch.setattr(delivery, "get_current_job", lambda: SimpleNamespace(worker_name=worker.name))
    # when its delivery job runs, then it delivers everything due: nobody on this worker waits
    with django_capture_on_commit_callbacks():
        delivery_run(sender_id=sender.pk, slot=0)
    assert len(sink.received) == 12


@override_settings(DELIVERY_BATCH_SIZE=5)
def test_a_delivery_job_does_not_hand_over_for_a_crm_backlog(
        sender, template, sink, monkeypatch, django_capture_on_commit_callbacks) -> None:
    # given 12 due emails and only a CRM sync job waiting (not latency-sensitive: a CRM backlog
    # would otherwise cut delivery to one batch per CRM job)
    queue_burst_then_signups(template, 12, 0)
    with django_capture_on_commit_callbacks(execute=True):
        get_queue("crm").enqueue("automation.crm.tasks.crm_import_sync", 1)
    monkeypatch.setattr(delivery, "get_current_job", lambda: object(), raising=False)  # as in a worker job
    # when the delivery job runs, then it delivers everything due, batch after batch
    with django_capture_on_commit_callbacks():
        delivery_run(sender_id=sender.pk, slot=0)
    assert len(sink.received) == 12


def test_a_claim_skips_a_message_deferred_after_its_read_and_keeps_the_ranked_order(
        sender, template, sink, monkeypatch) -> None:
    # given two causes: "a" with 6 emails, "b" with 7 (ranked in turns: a1 b1 a2 b2 ...)
    contacts = [make_contact(f"c{i}@example.com") for i in range(13)]
    a = sorted(messages_queue(template=template, items=[
        QueueItem(c.pk, f"a:{c.pk}", correlation_id="a") for c in contacts[:6]]))
    b = sorted(messages_queue(template=template, items=[
        QueueItem(c.pk, f"b:{c.pk}", correlation_id="b") for c in contacts[6:]]))
    now = timezone.now()
    real_fair_order = delivery.fair_order

    def deferred_meanwhile(rows: list[tuple[int, str]]) -> list[int]:
        # between the claim's read and its lock another worker defers the two best-ranked (a
        # temporary failure's retry in 5 minutes)
        ranked = real_fair_order(rows)
        Message.objects.filter(pk__in=ranked[:2]).update(
            status=MessageStatus.DEFERRED, next_attempt_at=now + dt.timedelta(minutes=5))
        return ranked

    monkeypatch.setattr(delivery, "fair_order", deferred_meanwhile)
    # when a batch of 5 is claimed
    claimed = messages_claim(sender_id=sender.pk, limit=5, now=now)
    # then the deferred two wait for their retry, and the batch is filled by the next in rank:
    # a1 b1 a2 of the first chunk, then the best-ranked two of the second [b2 a3 b3 a4 b4], not
    # the two lowest ids (a3 a4)
    assert [m.pk for m in claimed] == [a[1], b[1], a[2], b[2], a[3]]
    assert set(Message.objects.filter(status=MessageStatus.DEFERRED).values_list("pk", flat=True)) == {a[0], b[0]}


@override_settings(DELIVERY_BATCH_SIZE=8)
def test_while_an_event_job_waits_a_delivery_job_hands_over_mid_batch_after_the_signups(
        sender, template, sink, monkeypatch, django_capture_on_commit_callbacks) -> None:
    # given a burst's 12 emails and 4 signups' queued behind them, and an event job waiting on the
    # same worker (a signup's event that should not wait for a full batch of the burst's emails)
    monkeypatch.setattr(delivery, "HANDOVER_BATCH", 2)
    monkeypatch.setattr(delivery, "SMALL_CAUSE", 3)  # the burst's 4 in a batch of 8 count as a burst
    burst_ids, signup_ids = queue_burst_then_signups(template, 12, 4)
    get_queue("delivery").empty()
    with django_capture_on_commit_callbacks(execute=True):
        get_queue("events").enqueue("contacts.tasks_events.events_process_pending")
    monkeypatch.setattr(delivery, "get_current_job", lambda: object(), raising=False)  # as in a worker job
    # when the delivery job runs
    with django_capture_on_commit_callbacks():
        delivery_run(sender_id=sender.pk, slot=0)
    # then it claimed a batch of 8 (the signups ranked first), sent past HANDOVER_BATCH (2) to the
    # last signup's, and handed over before the burst's; the 4 it did not send are back in the
    # queue, rendered (a later batch only sends them)
    assert [r.rcpt_tos[0] for r in sink.received] == [f"signup{i}@example.com" for i in range(4)]
    assert Message.objects.filter(status=MessageStatus.QUEUED).count() == 12
    assert Message.objects.filter(status=MessageStatus.QUEUED).exclude(html="").count() == 4
