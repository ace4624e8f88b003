"""The admin flow a marketer follows: create (with its variant), test, approve, send, watch the
progress bar fill as delivery sends, pause and resume."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from broadcasts.models import Broadcast, BroadcastStatus
from broadcasts.services import broadcast_queue
from broadcasts.tests.conftest import make_contacts, make_template
from campaigns.delivery import delivery_run
from contacts.models import ContactList

pytestmark = pytest.mark.django_db


def form_data(**fields: Any) -> dict[str, Any]:
    data = {"key": "spring", "name": "Spring update", "schedule": "now", "test_share": "20", "ab_metric": "opens",
            "ab_wait_minutes": "240", "ab_min_sent": "100", "variants-TOTAL_FORMS": "1", "variants-INITIAL_FORMS": "0",
            "variants-MIN_NUM_FORMS": "1", "variants-MAX_NUM_FORMS": "4"}
    return {**data, **fields}


def messages_of(response: Any) -> str:
    return " ".join(str(m) for m in response.context["messages"])


def test_a_marketer_creates_tests_approves_sends_and_watches_a_broadcast(staged_sender, tester, role_users, sink):
    audience = ContactList.objects.create(name="Customers")
    contacts = make_contacts(4)
    audience.contacts.add(*contacts)
    template = make_template()
    client = Client()
    client.force_login(role_users["marketer"])
    response = client.post("/admin/broadcasts/broadcast/add/", form_data(
        sender=str(staged_sender.pk), lists=[str(audience.pk)], **{"variants-0-position": "0",
                                                                   "variants-0-template": str(template.pk)}))
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    broadcast = Broadcast.objects.get(key="spring")
    assert broadcast.variants.get().revision is not None  # pinned on save
    act = f"/admin/broadcasts/broadcast/{broadcast.pk}/act/"
    assert "Test sent" in messages_of(client.post(act, {"action": "test"}, follow=True))
    delivery_run(sender_id=staged_sender.pk, max_seconds=5)
    assert [r.rcpt_tos for r in sink.received] == [["qa@leadflow.test"]]
    assert sink.received[0].header("Subject").startswith("[TEST] News for")
    assert "Approved for 4 contacts" in messages_of(client.post(act, {"action": "approve"}, follow=True))
    assert "Sending to 4 contacts" in messages_of(client.post(act, {"action": "send"}, follow=True))
    broadcast_queue(broadcast_id=broadcast.pk)
    delivery_run(sender_id=staged_sender.pk, max_seconds=5)
    page = client.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/change/").content.decode()
    assert "4 sent, 0 failed" in page
    assert 'aria-valuenow="4"' in page
    listing = client.get("/admin/broadcasts/broadcast/").content.decode()
    assert 'role="progressbar"' in listing
    # once sending, nothing that was approved can be edited: the form shows it read-only
    assert 'name="key"' not in page
    broadcast.refresh_from_db()
    assert broadcast.status == BroadcastStatus.QUEUED
    # its report counts the four sent (not the test send), and exports as CSV
    report = client.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/report/")
    assert report.status_code == 200
    assert report.context["report"].sent == 4
    csv = client.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/report/csv/")
    assert csv["Content-Type"].startswith("text/csv")
    assert "Sent" in b"".join(csv.streaming_content).decode()  # type: ignore[attr-defined]  # a StreamingHttpResponse
    assert client.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/report/?bucket=week").status_code == 400


def test_a_schedule_in_the_past_is_refused_by_the_send_action(staged_sender, tester, role_users):
    audience = ContactList.objects.create(name="Customers")
    audience.contacts.add(*make_contacts(2))
    template = make_template()
    client = Client()
    client.force_login(role_users["approver"])
    client.post("/admin/broadcasts/broadcast/add/", form_data(
        sender=str(staged_sender.pk), lists=[str(audience.pk)], schedule="at", send_at_0="2020-01-01",
        send_at_1="09:00:00", **{"variants-0-position": "0", "variants-0-template": str(template.pk)}))
    broadcast = Broadcast.objects.get(key="spring")
    act = f"/admin/broadcasts/broadcast/{broadcast.pk}/act/"
    client.post(act, {"action": "test"})
    client.post(act, {"action": "approve"})
    text = messages_of(client.post(act, {"action": "send"}, follow=True))
    assert "2020-01-01 09:00 UTC is in the past" in text
    broadcast.refresh_from_db()
    assert broadcast.status == BroadcastStatus.APPROVED
