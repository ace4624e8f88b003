"""The React step end to end with every real part: the event API, the events queue on a real
worker, scoring rules, grades and MQL, segment membership, and the sales lead view."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rq import SimpleWorker

from conftest import make_user
from contacts.apikeys import api_key_create
from contacts.models import Contact, Event, Segment, SegmentMembership
from core import roles
from core.models import AuditEntry
from core.queues import get_connection, get_queue
from scoring.models import GradeBand, ScoreEntry, ScoringRule

pytestmark = pytest.mark.django_db(transaction=True)


def drain_events() -> None:
    queue = get_queue("events")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def post_events(raw_key: str, events: list[dict[str, Any]]) -> Any:
    return Client().post("/api/v1/events", {"events": events}, content_type="application/json",
                         HTTP_AUTHORIZATION=f"Bearer {raw_key}")


def test_events_score_grade_segment_and_show_up_for_sales() -> None:
    get_connection().flushdb()
    # given scoring rules, grades with an MQL band, and a segment of hot leads
    ScoringRule.objects.create(name="Pricing page", kind="behaviour", event_type="page_view",
                               property_filters={"page": "/pricing"}, points=20)
    ScoringRule.objects.create(name="Demo booked", kind="behaviour", event_type="demo_booked", points=50,
                               repeatable=False)
    ScoringRule.objects.create(name="Works in Germany", kind="fit",
                               conditions={"field": "country", "op": "eq", "value": "DE"}, points=5)
    GradeBand.objects.create(grade="A", min_score=60, is_mql=True)
    GradeBand.objects.create(grade="B", min_score=20)
    hot = Segment.objects.create(name="Hot", definition={"all": [
        {"field": "score", "op": "gte", "value": 60},
        {"event": "demo_booked", "did": True, "within_days": 7},
    ]})
    Contact.objects.create(email="dana@acme.example", country="DE", lifecycle_stage="lead")
    _, raw = api_key_create(name="website")

    # when the website reports what two people did
    response = post_events(raw, [
        {"email": "Dana@acme.example", "type": "page_view", "properties": {"page": "/pricing"},
         "idempotency_key": "e1"},
        {"email": "dana@acme.example", "type": "demo_booked", "idempotency_key": "e2"},
        {"email": "dana@acme.example", "type": "demo_booked", "idempotency_key": "e3"},
        {"email": "new.person@globex.example", "type": "page_view", "properties": {"page": "/blog"},
         "idempotency_key": "e4"},
    ])
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 4
    drain_events()

    # then every event is processed once, scored by its rules, and explained by the ledger
    assert not Event.objects.filter(processed_at__isnull=True, source="api:website").exists()
    dana = Contact.objects.get(email="dana@acme.example")
    assert dana.score == 20 + 50 + 5  # demo booked is not repeatable; the fit rule scores once
    assert sorted(ScoreEntry.objects.filter(contact=dana).values_list("rule_name", "points")) == [
        ("Demo booked", 50), ("Pricing page", 20), ("Works in Germany", 5)]
    assert (dana.grade, dana.lifecycle_stage) == ("A", "mql")
    assert dana.mql_at is not None
    assert AuditEntry.objects.filter(action="contact.became_mql", target_id=str(dana.pk)).exists()
    newcomer = Contact.objects.get(email="new.person@globex.example")
    assert (newcomer.score, newcomer.grade) == (0, "")
    # and segment membership follows at once, as an event workflows can trigger on
    assert list(SegmentMembership.objects.filter(segment=hot).values_list("contact__email", flat=True)) == [
        "dana@acme.example"]
    assert Event.objects.filter(contact=dana, event_type="segment_entered").count() == 1

    # when the same batch arrives again, nothing changes
    again = post_events(raw, [{"email": "dana@acme.example", "type": "demo_booked", "idempotency_key": "e2"}])
    assert again.json()["duplicates"] == 1
    drain_events()
    dana.refresh_from_db()
    assert dana.score == 75

    # and sales sees Dana at the top of the lead view, with the reason for the score
    sales = Client()
    sales.force_login(make_user("rep", roles.SALES))
    leads = sales.get("/leads/").content.decode()
    assert leads.index("dana@acme.example") < leads.index("new.person@globex.example")
    detail = sales.get(f"/leads/{dana.pk}/").content.decode()
    for rule in ("Demo booked", "Pricing page", "Works in Germany"):
        assert rule in detail
