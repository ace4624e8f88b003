"""A/B tests: a share of the audience gets the variants, the winner by unique opens is chosen by the
tick once the wait is over, the decision is recorded with its numbers, the rest gets the winner."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from urllib.parse import urlsplit

import pytest
from django.db import IntegrityError
from django.test import Client
from django.utils import timezone

from broadcasts.models import BroadcastRecipient, BroadcastStatus, BroadcastVariant
from broadcasts.services import broadcast_queue, broadcast_send, broadcasts_tick
from broadcasts.tests.conftest import approve, make_broadcast, make_contacts
from campaigns import tracking
from campaigns.delivery import delivery_run
from core.models import AuditEntry

pytestmark = pytest.mark.django_db


def test_the_variant_with_more_unique_opens_wins_and_the_rest_get_it(staged_sender, tester, sink, role_users):
    contacts = make_contacts(80)
    broadcast = approve(make_broadcast(staged_sender, contacts, subjects=["Plain subject", "Curious subject"],
                                       test_share=50, ab_metric="opens", ab_wait_minutes=60))
    sink.state.received.clear()
    start = timezone.now()
    broadcast_send(broadcast=broadcast, actor=None, now=start)
    # the test share got a variant each; the rest waits for the winner
    groups = Counter(BroadcastRecipient.objects.values_list("variant", flat=True))
    assert groups[0] > 0
    assert groups[1] > 0
    assert groups[None] > 0
    assert sum(groups.values()) == 80
    broadcast_queue(broadcast_id=broadcast.pk)
    delivery_run(sender_id=staged_sender.pk, max_seconds=10)
    assert len(sink.received) == groups[0] + groups[1]
    # variant B's readers open it (through the real open pixel), twice each; one of A's opens it
    client = Client()
    b_messages = [pk for pk in BroadcastRecipient.objects.filter(variant=1).values_list("message_id", flat=True)
                  if pk is not None]
    for message_id in b_messages:
        for _ in range(2):
            assert client.get(urlsplit(tracking.open_url(message_id)).path).status_code == 200
    a_first = BroadcastRecipient.objects.filter(variant=0).values_list("message_id", flat=True).first()
    assert a_first is not None
    client.get(urlsplit(tracking.open_url(a_first)).path)
    # not before the wait is over
    assert broadcasts_tick(now=start + dt.timedelta(minutes=59))["decided"] == 0
    # then B wins, with its numbers recorded
    assert broadcasts_tick(now=start + dt.timedelta(minutes=61))["decided"] == 1
    broadcast.refresh_from_db()
    decision = broadcast.decision
    assert (broadcast.winner, decision["winner"], decision["metric"]) == (1, "B", "opens")
    by_label = {v["label"]: v for v in decision["variants"]}
    assert by_label["B"]["unique_opens"] == groups[1]
    assert by_label["B"]["sent"] == groups[1]
    assert by_label["A"]["unique_opens"] == 1
    assert by_label["A"]["rate"] == round(1 / groups[0], 4)
    assert decision["rest"] == groups[None]
    assert AuditEntry.objects.filter(action="broadcast.ab_decided").count() == 1
    # and the rest of the audience gets B's subject, everyone exactly once
    broadcast_queue(broadcast_id=broadcast.pk)
    delivery_run(sender_id=staged_sender.pk, max_seconds=10)
    assert Counter(r.rcpt_tos[0] for r in sink.received) == Counter({c.email: 1 for c in contacts})
    subjects = Counter(r.header("Subject") for r in sink.received)
    assert subjects == {"Plain subject": groups[0], "Curious subject": groups[1] + groups[None]}
    broadcast.refresh_from_db()
    assert broadcast.status == BroadcastStatus.QUEUED
    # the report shows both variants with the leader, the difference and a confidence figure
    viewer = Client()
    viewer.force_login(role_users["ops"])
    report = viewer.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/report/").content.decode()
    assert 'id="ab-results"' in report
    assert "B (leader)" in report
    # a second tick decides nothing again
    assert broadcasts_tick(now=start + dt.timedelta(hours=3))["decided"] == 0


def test_a_fifth_variant_is_refused_by_the_database(staged_sender, tester):
    broadcast = make_broadcast(staged_sender, make_contacts(3), subjects=["a", "b", "c", "d"])
    template = broadcast.variants.get(position=0).template
    with pytest.raises(IntegrityError):
        BroadcastVariant.objects.create(broadcast=broadcast, position=4, template=template)
