"""A contact becoming an MQL is an event: it carries the id of the event that lifted the score."""

from __future__ import annotations

import pytest

from contacts.models import Event
from core.logs import contact_causes
from scoring.services import MQL_EVENT, score_events
from scoring.tests.factories import NOW, bands, behaviour_rule, contact, event

pytestmark = pytest.mark.django_db


def test_became_mql_takes_the_correlation_id_of_the_event_that_caused_it() -> None:
    bands()  # B (MQL) from 30
    behaviour_rule("Demo", "demo_request", points=40)
    ann, bob = contact(), contact()
    events = [event(ann, "demo_request", at=NOW), event(bob, "demo_request", at=NOW)]
    with contact_causes({ann.pk: "req-ann", bob.pk: "req-bob"}):
        score_events(events=events, now=NOW)
    mql = dict(Event.objects.filter(event_type=MQL_EVENT).values_list("contact_id", "correlation_id"))
    assert mql == {ann.pk: "req-ann", bob.pk: "req-bob"}
