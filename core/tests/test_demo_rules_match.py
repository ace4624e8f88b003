"""The demo's scoring rules match what the product records (issue 19): a page view sent as the
event API documents it ({"path": ...}) and an open recorded by the tracking pixel both score."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.test import Client, override_settings

from campaigns.models import Message, SenderProfile
from campaigns.services import tracking_open
from contacts.apikeys import api_key_create
from contacts.models import ApiScope, Contact
from contacts.pipeline import events_process_pending
from core.queues import get_connection

pytestmark = pytest.mark.django_db


@override_settings(DEBUG=True)
def test_a_first_pricing_page_view_and_an_email_open_score_on_the_demo_rules() -> None:
    get_connection().flushdb()  # rate-limit windows of earlier tests
    call_command("seed_demo")
    raw = api_key_create(name="website", scopes=ApiScope.values)[1]

    response = Client().post("/api/v1/events", json.dumps({"events": [
        {"email": "newcomer@acme.example", "type": "page_view", "properties": {"path": "/pricing"},
         "idempotency_key": "pv-newcomer-1"}]}), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 202, response.content
    events_process_pending()
    newcomer = Contact.objects.with_scores().get(email="newcomer@acme.example")
    assert newcomer.score == 15  # "Visited pricing"

    message = Message.objects.create(contact=newcomer, sender=SenderProfile.objects.get(is_default=True),
                                     subject="Hi", html="<p>Hi</p>", text="Hi")
    assert tracking_open(message_id=message.pk)
    events_process_pending()
    assert Contact.objects.with_scores().get(pk=newcomer.pk).score == 17  # + "Opened an email"
