"""The event admin's search box: one exact lookup chosen by the term's shape (id, email, correlation id)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from contacts.models import Contact, Event

pytestmark = pytest.mark.django_db


def event(email: str, correlation_id: str) -> Event:
    contact, _ = Contact.objects.get_or_create(email=email)
    return Event.objects.create(contact=contact, event_type="page_view", occurred_at=timezone.now(),
                                source="test", correlation_id=correlation_id)


def found(client: Client, term: str) -> list[int]:
    response = client.get("/admin/contacts/event/", {"q": term})
    assert response.status_code == 200
    return sorted(e.pk for e in response.context["cl"].result_list)


def test_the_search_box_finds_events_by_id_email_or_correlation_id(client: Client, role_users) -> None:  # noqa: ANN001
    ann1, ann2 = event("ann@example.com", "req-ann"), event("ann@example.com", "req-ann-2")
    bob = event("bob@example.com", "4242424242")  # a numeric request id that is no event's id
    client.force_login(role_users["ops"])
    assert found(client, str(ann2.pk)) == [ann2.pk]
    assert found(client, " Ann@Example.com ") == [ann1.pk, ann2.pk]
    assert found(client, "req-ann") == [ann1.pk]  # exact, not a prefix
    assert found(client, "4242424242") == [bob.pk]  # no event has that id: the correlation id
    assert found(client, "nobody@example.com") == []
    assert found(client, "9" * 30) == []  # too long for an id: a correlation id, and none matches
