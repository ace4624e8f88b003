"""A delivery worker killed with SIGKILL mid-batch: nothing lost, at most the in-flight one twice."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from django.utils import timezone

from campaigns.delivery import delivery_run, delivery_sweep
from campaigns.models import Message, MessageStatus
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact
from core.testing.workers import kill_when, worker_process


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_loses_nothing_and_repeats_at_most_the_message_in_flight(sender, template, sink):
    # given 60 queued messages and a slow mailbox server (so the kill lands mid-batch)
    sink.state.delay = 0.05
    contacts = [make_contact(f"k{i}@example.com") for i in range(60)]
    with worker_process("delivery") as worker:
        messages_queue(template=template, items=[QueueItem(c.pk, f"burst:{c.pk}") for c in contacts])
        # when the worker and its work horse are killed mid-batch
        kill_when(worker, lambda: len(sink.received) >= 10)
    assert 10 <= len(sink.received) < 60, "too late to kill mid-batch"
    sent_before_kill = len(sink.received)
    in_flight = Message.objects.filter(status=MessageStatus.SENDING).count()
    assert in_flight > 0  # the rest of the batch was still claimed
    # then the sweeper gives the abandoned claims back and a new worker finishes the job
    later = timezone.now() + dt.timedelta(hours=1)
    assert delivery_sweep(now=later)["requeued"] == in_flight
    sink.state.delay = 0
    delivery_run(sender_id=sender.pk, max_seconds=30)
    # every message was sent, and at most one (the one in flight at the kill) went twice
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENT}
    received = Counter(sink.ids())
    assert set(received) == {str(pk) for pk in Message.objects.values_list("id", flat=True)}
    repeated = [msg_id for msg_id, n in received.items() if n > 1]
    assert len(repeated) <= 1, repeated
    assert len(sink.received) - 60 == len(repeated)
    assert sent_before_kill >= 10
