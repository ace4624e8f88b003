"""Consent history (issue 20): every path that changes consent records who, when, source and
proof; the history is exported with the contact's data and kept after erasure only as a hash;
a message answers "why did this person get this email"."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from campaigns import tracking
from campaigns.delivery import delivery_run_batch
from campaigns.models import Message, MessageStatus
from campaigns.services import BounceReport, QueueItem, bounces_record, messages_queue
from campaigns.tests.conftest import make_contact, make_template
from consent.models import ConsentRecord, ConsentSource, Topic
from consent.selectors import consent_in_force
from contacts.emails import suppression_hash
from contacts.ingest import contacts_upsert
from contacts.models import ConsentStatus, Contact
from contacts.services import contact_erase, contact_export_data

pytestmark = pytest.mark.django_db


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def test_the_api_records_a_consent_change_and_an_unchanged_status_records_nothing():
    contacts_upsert(items=[{"email": "ann@example.com", "consent_status": "granted", "consent_source": "webinar"}])
    contacts_upsert(items=[{"email": "ann@example.com", "consent_status": "granted", "first_name": "Ann"}])
    [record] = ConsentRecord.objects.all()
    assert (record.status, record.previous_status, record.source, record.detail) == \
        ("granted", "", ConsentSource.API, "webinar")
    assert record.email_hash == suppression_hash("ann@example.com")


def test_the_admin_records_who_changed_consent(client: Client, role_users):  # noqa: ANN001
    contact = make_contact("bob@example.com", consent_status=ConsentStatus.UNKNOWN)
    client.force_login(role_users["marketer"])
    url = reverse("admin:contacts_contact_change", args=[contact.pk])
    form = {"email": contact.email, "lifecycle_stage": "subscriber", "consent_status": "granted",
            "consent_source": "phone call", "attributes": "{}", "owner": ""}
    response = client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    [record] = ConsentRecord.objects.all()
    assert (record.status, record.previous_status, record.source, record.actor, record.detail) == \
        ("granted", "unknown", ConsentSource.ADMIN, "marketer", "phone call")


def _sent(sender, template, email: str = "reader@example.com") -> Message:  # noqa: ANN001
    contact = Contact.objects.filter(email=email).first() or make_contact(email)
    messages_queue(template=template, items=[QueueItem(contact.pk, f"welcome:{contact.pk}:{template.pk}")])
    delivery_run_batch(sender=sender)
    return Message.objects.get(contact=contact, template=template)


def test_unsubscribe_and_complaint_are_recorded_with_their_message(client: Client, sender, sink):  # noqa: ANN001
    template = make_template()
    message = _sent(sender, template)
    client.post(path_of(tracking.unsubscribe_url(message.pk)), {"List-Unsubscribe": "One-Click"},
                REMOTE_ADDR="203.0.113.9")
    record = ConsentRecord.objects.get()
    assert (record.status, record.previous_status, record.source, record.message_id, str(record.ip)) == \
        ("withdrawn", "granted", ConsentSource.UNSUBSCRIBE, message.pk, "203.0.113.9")

    other = _sent(sender, template, "carol@example.com")
    bounces_record(reports=[BounceReport(email="carol@example.com", kind="complaint", leadflow_id=other.pk)],
                   source="ses")
    complaint = ConsentRecord.objects.get(contact__email="carol@example.com")
    assert (complaint.status, complaint.source, complaint.message_id) == ("withdrawn", ConsentSource.COMPLAINT,
                                                                          other.pk)


def test_the_export_holds_the_history_and_erasure_keeps_only_the_hash(role_users):  # noqa: ANN001
    contacts_upsert(items=[{"email": "dan@example.com", "consent_status": "granted"}])
    contact = Contact.objects.get()
    exported = contact_export_data(contact=contact)["contact"]["consent_history"]
    assert [(h["status"], h["source"]) for h in exported] == [("granted", "api")]

    contact_erase(contact=contact, actor=role_users["admin"])
    [kept] = ConsentRecord.objects.all()
    assert kept.contact_id is None
    assert kept.ip is None
    assert kept.proof == {}
    assert kept.detail == ""
    assert kept.email_hash == suppression_hash("dan@example.com")
    assert kept.status == "granted"


def test_a_message_says_which_consent_was_in_force_when_it_was_sent(client: Client, sender, sink,  # noqa: ANN001
                                                                    role_users):
    contacts_upsert(items=[{"email": "eve@example.com", "consent_status": "granted", "consent_source": "fair"}])
    template = make_template(topic=Topic.objects.create(key="news", name="News"))
    message = _sent(sender, template, "eve@example.com")
    assert message.status == MessageStatus.SENT
    # A later withdrawal is not what was in force when it was sent.
    contacts_upsert(items=[{"email": "eve@example.com", "consent_status": "withdrawn"}])
    answer = consent_in_force(message)
    assert answer.record is not None
    assert answer.record.status == "granted"
    assert "granted" in answer.explanation
    assert "fair" in answer.explanation
    assert "Topic" in answer.explanation

    client.force_login(role_users["marketer"])
    page = client.get(reverse("admin:campaigns_message_change", args=[message.pk])).content.decode()
    assert 'id="consent-in-force"' in page
    assert "Marketing consent was granted" in page


def test_the_contact_page_shows_the_consent_history_newest_first(role_users):  # noqa: ANN001
    import datetime as dt
    import re

    from django.utils import timezone

    from consent.services import consent_record

    contact = make_contact("dana@example.com", consent_status=ConsentStatus.WITHDRAWN)
    topic = Topic.objects.create(key="product", name="Product news")
    day = timezone.now().replace(microsecond=0) - dt.timedelta(days=3)
    consent_record(contact=contact, status="granted", previous_status="unknown", source=ConsentSource.IMPORT,
                   detail="fair badge scan", actor="import #7", proof={"file": "fair.csv"}, at=day)
    consent_record(contact=contact, topic=topic, status="unsubscribed", source=ConsentSource.PREFERENCES,
                   actor="the contact", ip="203.0.113.9", at=day + dt.timedelta(days=1))
    consent_record(contact=contact, status="withdrawn", previous_status="granted", source=ConsentSource.UNSUBSCRIBE,
                   actor="the contact", ip="203.0.113.9", message_id=42, at=day + dt.timedelta(days=2))
    client = Client()
    client.force_login(role_users["marketer"])
    html = client.get(reverse("admin:contacts_contact_change", args=[contact.pk])).content.decode()
    section = html.split('id="overview-consent-history"', 1)[1].split("</table>", 1)[0]
    rows = [[" ".join(cell.split()) for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
            for row in section.split('<tr class="consent-record">')[1:]]
    assert rows == [
        [f"{timezone.localtime(day + dt.timedelta(days=2)):%Y-%m-%d %H:%M}",
         'withdrawn <span class="quiet">was granted</span>', "Unsubscribe", "the contact", "IP 203.0.113.9; email #42"],
        [f"{timezone.localtime(day + dt.timedelta(days=1)):%Y-%m-%d %H:%M}",
         "unsubscribed (topic Product news)", "Preference center", "the contact", "IP 203.0.113.9"],
        [f"{timezone.localtime(day):%Y-%m-%d %H:%M}",
         'granted <span class="quiet">was unknown</span>', "Import: fair badge scan", "import #7", "file: fair.csv"],
    ]
