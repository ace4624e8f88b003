"""Events carry the correlation id of the request or job that created them, in the same bulk
insert; segment events take the id of the change that moved the contact."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from contacts import pipeline
from contacts.apikeys import api_key_create
from contacts.ingest import events_ingest
from contacts.models import Contact, Event, Segment
from core.logs import correlation_scope
from core.queues import get_connection, get_queue

ITEMS = [{"email": "ann@example.com", "type": "signed_up", "idempotency_key": "k1"},
         {"email": "bob@example.com", "type": "signed_up"}]


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()


def test_api_events_carry_the_requests_id_and_hand_it_to_their_job(db: None, django_capture_on_commit_callbacks: Any,
                                                                   ) -> None:
    _, raw = api_key_create(name="site")
    # when the API is called with an X-Request-ID (the jobs leave after COMMIT)
    with django_capture_on_commit_callbacks(execute=True):
        response = Client().post("/api/v1/events", {"events": ITEMS}, content_type="application/json",
                                 HTTP_AUTHORIZATION=f"Bearer {raw}", HTTP_X_REQUEST_ID="lb-7.abc")
    assert response.status_code == 202, response.content
    # then both events store it, and the job that processes them is logged under it
    assert sorted(Event.objects.values_list("correlation_id", flat=True)) == ["lb-7.abc", "lb-7.abc"]
    assert [job.meta.get("correlation_id") for job in get_queue("events").jobs] == ["lb-7.abc"]


def test_a_duplicate_keeps_the_id_of_the_call_that_first_sent_it(db: None) -> None:
    key, _ = api_key_create(name="site")
    events_ingest(api_key=key, items=ITEMS[:1], correlation_id="first-call")
    again = events_ingest(api_key=key, items=ITEMS[:1], correlation_id="second-call")
    assert again.duplicates == 1
    assert list(Event.objects.values_list("correlation_id", flat=True)) == ["first-call"]


def test_outside_a_request_or_job_events_get_no_invented_id(db: None) -> None:
    key, _ = api_key_create(name="site")
    events_ingest(api_key=key, items=ITEMS[1:])
    assert list(Event.objects.values_list("correlation_id", flat=True)) == [""]
    with correlation_scope("job-9"):
        events_ingest(api_key=key, items=[{"email": "cy@example.com", "type": "signed_up"}])
    assert Event.objects.get(contact__email="cy@example.com").correlation_id == "job-9"


def test_segment_events_take_the_id_of_the_event_that_moved_each_contact(db: None) -> None:
    Segment.objects.create(name="Signed up", definition={"event": "signed_up", "did": True, "within_days": 7})
    ann, bob = Contact.objects.create(email="ann@example.com"), Contact.objects.create(email="bob@example.com")
    now = timezone.now()
    events = Event.objects.bulk_create([
        Event(contact=ann, event_type="signed_up", occurred_at=now, source="api:t", correlation_id="req-ann"),
        Event(contact=bob, event_type="signed_up", occurred_at=now, source="api:t", correlation_id="req-bob"),
    ])
    with correlation_scope("the-job"):
        assert pipeline.events_process(event_ids=[e.pk for e in events]) == 2
    entered = dict(Event.objects.filter(event_type="segment_entered").values_list("contact_id", "correlation_id"))
    assert entered == {ann.pk: "req-ann", bob.pk: "req-bob"}


def test_segment_events_of_a_contact_edit_take_the_edits_id(db: None) -> None:
    Segment.objects.create(name="Germany", definition={"field": "country", "op": "eq", "value": "DE"})
    contact = Contact.objects.create(email="ann@example.com", country="DE")
    with correlation_scope("admin-edit-1"):
        pipeline.contacts_changed(contact_ids=[contact.pk])
    assert list(Event.objects.filter(event_type="segment_entered").values_list("correlation_id", flat=True)) == [
        "admin-edit-1"]
