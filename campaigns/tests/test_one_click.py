"""One-click unsubscribe that always works (issue 17, item 6): a mailbox provider POSTs RFC 8058
one-click requests for many recipients from one address, without cookies or a CSRF token. Valid
tokens count against their own limit only, so a busy provider address is never refused."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from campaigns import tracking, views
from campaigns.models import Message, Suppression, SuppressionReason
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact
from contacts.models import ConsentStatus, Contact

pytestmark = pytest.mark.django_db

PROVIDER = "209.85.220.41"  # one of a mailbox provider's outbound servers


def test_a_providers_one_click_posts_from_one_busy_address_all_succeed(sender: Any, template: Any) -> None:
    # More recipients than the per-IP budget allows back to back (its burst), all from one address.
    count = views.PUBLIC_RATE.burst + 50
    contacts = [make_contact(f"r{i}@example.com") for i in range(count)]
    messages_queue(template=template, items=[QueueItem(c.pk, f"news:{c.pk}") for c in contacts])
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR=PROVIDER)  # no cookies, no CSRF token
    # The address is busy: its per-IP budget (for invalid links) is spent and held empty.
    views.client_throttle(PROVIDER).pause(60)
    assert client.get("/e/u/1:forged").status_code == 429

    codes = [client.post("/" + tracking.unsubscribe_url(m.pk).split("://", 1)[1].split("/", 1)[1],
                         {"List-Unsubscribe": "One-Click"}).status_code
             for m in Message.objects.order_by("id")]

    assert codes == [200] * count
    assert Contact.objects.filter(consent_status=ConsentStatus.WITHDRAWN,
                                  consent_source="one-click unsubscribe").count() == count
    assert Suppression.objects.filter(reason=SuppressionReason.UNSUBSCRIBED).count() == count
