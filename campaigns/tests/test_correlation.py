"""Tracking hits and bounce reports become events carrying the id of the request that reported them."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from campaigns import tracking
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact
from contacts.models import Event

pytestmark = pytest.mark.django_db


def test_an_open_becomes_an_event_with_the_pixel_requests_id(template: Any, sender: Any) -> None:
    contact = make_contact("ann@example.com")
    with_cause = messages_queue(template=template, items=[QueueItem(contact.pk, "k1", correlation_id="req-ann")])[0]
    response = Client().get(tracking.open_url(with_cause), HTTP_X_REQUEST_ID="pixel-req-1")
    assert response.status_code == 200
    # the open is the recipient's own action: its request names it (the message keeps its cause)
    assert list(Event.objects.filter(event_type="email_opened").values_list("correlation_id", flat=True)) == [
        "pixel-req-1"]
