"""Review findings 3, 6 and 11 (part): a message claimed before its broadcast was cancelled or
paused is not sent; the report survives an opened message that hard-bounced later; total opens
are never below unique opens."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from broadcasts.models import Broadcast, BroadcastRecipient
from broadcasts.reports import broadcast_ab
from broadcasts.services import (
    broadcast_cancel,
    broadcast_messages,
    broadcast_pause,
    broadcast_queue,
    broadcast_resume,
    broadcast_send,
)
from broadcasts.tests.conftest import approve, make_broadcast, make_contacts
from campaigns.delivery import delivery_run, delivery_sweep
from campaigns.models import EngagementKind, Message, MessageEngagement, MessageStatus
from campaigns.reports import report_for
from campaigns.services import tracking_click, tracking_open

pytestmark = pytest.mark.django_db


def _queued(broadcast: Broadcast, sink: Any) -> list[int]:
    sink.state.received.clear()  # (the test send)
    broadcast_send(broadcast=broadcast, actor=None)
    broadcast_queue(broadcast_id=broadcast.pk)
    return list(Message.objects.filter(source=broadcast.source).order_by("pk").values_list("pk", flat=True))


def _claimed_by_a_killed_worker(message_id: int) -> None:
    """A delivery worker claimed the message and was SIGKILLed before sending it."""
    Message.objects.filter(pk=message_id).update(status=MessageStatus.SENDING, claim_token=uuid.uuid4(),
                                                 claimed_at=timezone.now() - dt.timedelta(hours=1))


# --- Finding 3 ------------------------------------------------------------------------------------


def test_a_message_claimed_by_a_killed_worker_is_not_sent_after_the_broadcast_is_cancelled(staged_sender, tester, sink):
    # Given a broadcast whose first message a killed worker had claimed when it was cancelled
    broadcast = approve(make_broadcast(staged_sender, make_contacts(3)))
    ids = _queued(broadcast, sink)
    _claimed_by_a_killed_worker(ids[0])
    assert broadcast_cancel(broadcast=broadcast, actor="marketer", reason="wrong price in the email") == 2
    # When the sweeper puts it back and delivery runs
    assert delivery_sweep()["requeued"] == 1
    delivery_run(sender_id=staged_sender.pk, max_seconds=10)
    # Then nothing was sent and it ends like the others, with the reason
    assert sink.received == []
    rows = list(Message.objects.filter(pk__in=ids).values_list("status", "reason"))
    assert rows == [(MessageStatus.SUPPRESSED, "broadcast_cancelled")] * 3
    swept = Message.objects.get(pk=ids[0])
    assert swept.last_error == "not sent: broadcast news was cancelled: wrong price in the email"
    assert swept.next_attempt_at is None
    assert swept.claim_token is None


def test_a_message_claimed_before_a_pause_is_held_and_sent_once_on_resume(staged_sender, tester, sink):
    # Given a broadcast whose first message a killed worker had claimed when it was paused
    contacts = make_contacts(3)
    broadcast = approve(make_broadcast(staged_sender, contacts))
    ids = _queued(broadcast, sink)
    _claimed_by_a_killed_worker(ids[0])
    assert broadcast_pause(broadcast=broadcast, actor="marketer") == 2
    # When the sweeper puts it back and delivery runs
    delivery_sweep()
    delivery_run(sender_id=staged_sender.pk, max_seconds=10)
    # Then it is held like the others: nothing sent
    assert sink.received == []
    held = Message.objects.get(pk=ids[0])
    assert (held.status, held.reason, held.last_error) == (MessageStatus.DEFERRED, "broadcast_paused",
                                                           "held: broadcast news is paused")
    assert held.next_attempt_at is not None
    assert held.next_attempt_at.year == 2999
    # And on resume every recipient gets it exactly once
    assert broadcast_resume(broadcast=broadcast, actor="marketer") == 3
    delivery_run(sender_id=staged_sender.pk, max_seconds=10)
    delivery_sweep()
    delivery_run(sender_id=staged_sender.pk, max_seconds=10)
    assert Counter(r.rcpt_tos[0] for r in sink.received) == Counter({c.email: 1 for c in contacts})
    assert set(Message.objects.filter(pk__in=ids).values_list("status", flat=True)) == {MessageStatus.SENT}


# --- Finding 6 ------------------------------------------------------------------------------------


def test_the_broadcast_report_survives_an_opened_message_that_hard_bounced_later(staged_sender, tester, sink):
    broadcast = approve(make_broadcast(staged_sender, make_contacts(20, "r"), subjects=["A", "B"], test_share=90))
    _queued(broadcast, sink)
    now = timezone.now()
    # every test-group message was sent; one of B's was opened (pixel) and then reported as a hard bounce
    Message.objects.filter(source=broadcast.source).update(status=MessageStatus.SENT, sent_at=now)
    b_ids = list(BroadcastRecipient.objects.filter(broadcast=broadcast, variant=1, message__isnull=False)
                 .values_list("message_id", flat=True))
    Message.objects.filter(pk=b_ids[0]).update(opened_at=now)
    Message.objects.filter(pk__in=b_ids).update(status=MessageStatus.BOUNCED, bounced_at=now)
    client = Client(raise_request_exception=False)
    client.force_login(User.objects.get(username="boss"))
    response = client.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/report/")
    assert response.status_code == 200, response.status_code
    # B delivered nothing, so its bounced open is no success: 0 of 0, not 1 of 0
    ab = broadcast_ab(broadcast)
    assert ab is not None
    assert [(r.name, r.successes, r.trials) for r in ab.results][1] == ("B", 0, 0)


# --- Finding 11 (part) ----------------------------------------------------------------------------


def test_opens_total_is_never_below_opened_unique_when_a_click_implied_the_open(staged_sender, tester, sink):
    # Given two sent broadcast messages: one only clicked (images blocked), one opened twice then clicked
    broadcast = approve(make_broadcast(staged_sender, make_contacts(2)))
    _queued(broadcast, sink)
    delivery_run(sender_id=staged_sender.pk, max_seconds=10)
    clicked_only, opened = Message.objects.filter(source=broadcast.source).order_by("pk")
    assert clicked_only.status == MessageStatus.SENT
    assert clicked_only.links
    tracking_click(message_id=clicked_only.pk, index=0)
    tracking_open(message_id=opened.pk)
    tracking_open(message_id=opened.pk)
    tracking_click(message_id=opened.pk, index=0)
    assert not MessageEngagement.objects.filter(message=clicked_only, kind=EngagementKind.OPEN).exists()
    # Then the click's implied open counts once in the total, next to the two recorded ones
    report = report_for(broadcast_messages(broadcast.pk), bucket="hour")
    assert (report.opened_unique, report.opened_total) == (2, 3)
    assert (report.clicked_unique, report.clicked_total) == (2, 2)
    # And the chart adds up to the same total
    assert sum(b["opened_total"] for b in report.series) == 3
