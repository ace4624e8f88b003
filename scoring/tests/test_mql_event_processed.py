"""The became_mql event a batch creates is processed by a job of its own after COMMIT (a workflow
triggered on it, "tell sales about a new MQL", must not wait for the next unrelated event or for the
sweeper's two minutes: at the end of a burst there is no next event)."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.utils import timezone
from rq import SimpleWorker

from contacts.ingest import enqueue_processing
from contacts.models import Event
from core.queues import get_connection, get_queue
from scoring.services import MQL_EVENT
from scoring.tests.factories import bands, behaviour_rule, contact


@pytest.mark.django_db(transaction=True)
def test_the_became_mql_event_is_processed_without_the_sweeper() -> None:
    get_connection().flushdb()
    bands()  # B (MQL) from 30
    behaviour_rule("Demo", "demo_request", points=40)
    ann = contact()
    with transaction.atomic():  # the API's way: store, then kick after COMMIT
        demo = Event.objects.create(contact=ann, event_type="demo_request", occurred_at=timezone.now(),
                                    source="test")
        enqueue_processing(event_ids=[demo.pk])

    queue = get_queue("events")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)  # no sweeper, no scheduler

    became = Event.objects.get(contact=ann, event_type=MQL_EVENT)
    assert became.processed_at is not None
    assert not Event.objects.filter(processed_at__isnull=True).exists()
