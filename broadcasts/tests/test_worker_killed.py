"""A worker SIGKILLed while it sends a broadcast: nothing is lost, at most the message in flight
goes twice, and the sweepers (delivery's and broadcasts_tick) finish the rest."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from django.utils import timezone

from broadcasts.models import BroadcastStatus
from broadcasts.services import broadcast_messages, broadcast_send, broadcasts_tick
from broadcasts.tests.conftest import approve, make_broadcast, make_contacts, work
from campaigns.delivery import delivery_run, delivery_sweep
from campaigns.models import MessageStatus
from core.testing.workers import kill_when, worker_process


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_broadcast_repeats_at_most_the_message_in_flight(staged_sender, tester, sink):
    # given an approved broadcast to 60 contacts and a slow mailbox server (so the kill lands mid-send)
    contacts = make_contacts(60)
    broadcast = approve(make_broadcast(staged_sender, contacts))
    sink.state.received.clear()
    sink.state.delay = 0.05
    with worker_process("default", "delivery") as worker:
        # when it is sent (its queue job and the delivery jobs go to that worker)
        broadcast_send(broadcast=broadcast, actor=None)
        # and the worker and its work horse are killed mid-send
        kill_when(worker, lambda: len(sink.received) >= 10)
    assert 10 <= len(sink.received) < 60, "too late to kill mid-send"
    # then the sweepers give the claims back and kick the broadcast, and delivery finishes it
    sink.state.delay = 0
    assert delivery_sweep(now=timezone.now() + dt.timedelta(hours=1))["requeued"] >= 1
    broadcasts_tick()
    work("default")
    delivery_run(sender_id=staged_sender.pk, max_seconds=30)
    assert set(broadcast_messages(broadcast.pk).values_list("status", flat=True)) == {MessageStatus.SENT}
    received = Counter(r.rcpt_tos[0] for r in sink.received)
    assert set(received) == {c.email for c in contacts}
    repeated = [address for address, n in received.items() if n > 1]
    assert len(repeated) <= 1, repeated
    broadcast.refresh_from_db()
    assert broadcast.status == BroadcastStatus.QUEUED
