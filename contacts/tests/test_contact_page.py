"""The contact page (issue 19): score with its breakdown by rule, a timeline of events and emails,
segments, workflows with their step, CRM sync state and consent, above the form."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from automation.models import Enrollment, Workflow, WorkflowVersion
from campaigns.models import Message
from contacts.models import Contact, Segment, SegmentMembership
from scoring.services import score_events
from scoring.tests.factories import bands, behaviour_rule, event

pytestmark = pytest.mark.django_db


def test_the_contact_page_shows_score_why_timeline_segments_workflows_and_consent(
        role_users: dict[str, User], sender: Any) -> None:
    bands()
    behaviour_rule("Pricing visits", points=10)
    ann = Contact.objects.create(email="ann@acme.example", consent_status="granted", consent_source="webinar form",
                                 consent_at=timezone.now(), owner=role_users["sales"])
    now = timezone.now()
    score_events(events=[event(ann, at=now, properties={"path": "/pricing"}), event(ann, at=now)], now=now)
    Message.objects.create(contact=ann, sender=sender, idempotency_key="m1", subject="Welcome aboard", status="sent",
                           sent_at=now)
    SegmentMembership.objects.create(contact=ann, segment=Segment.objects.create(name="Hot leads"))
    workflow = Workflow.objects.create(key="nurture", name="Nurture")
    version = WorkflowVersion.objects.create(workflow=workflow, number=3, definition={"steps": []}, state="production")
    Enrollment.objects.create(contact=ann, workflow=workflow, version=version, step_id="wait-2-days", entered_at=now,
                              next_run_at=now)

    client = Client()
    client.force_login(role_users["marketer"])
    html = client.get(f"/admin/contacts/contact/{ann.pk}/change/").content.decode()
    assert '<span id="contact-score">20</span>' in html
    assert "Pricing visits" in html
    assert 'class="timeline-event"' in html
    assert "path=/pricing" in html
    assert "Welcome aboard" in html  # the email, linked to its message page
    assert "Hot leads" in html
    assert "Nurture v3" in html
    assert '<td class="enrollment-step">wait-2-days</td>' in html
    assert "Granted (webinar form" in html
    assert '<td id="contact-owner">sales</td>' in html
    assert "Not synced to a CRM." in html


def test_custom_attributes_are_typed_fields_not_raw_json(role_users: dict[str, User]) -> None:
    from contacts.models import CustomField

    CustomField.objects.create(key="plan", label="Plan", field_type="choice", choices=["free", "enterprise"])
    CustomField.objects.create(key="employees", label="Employees", field_type="number")
    CustomField.objects.create(key="renewal", label="Renewal", field_type="date")
    CustomField.objects.create(key="vip", label="VIP", field_type="bool")
    ann = Contact.objects.create(email="ann@acme.example", attributes={"plan": "free", "vip": True})
    client = Client()
    client.force_login(role_users["marketer"])
    url = f"/admin/contacts/contact/{ann.pk}/change/"
    html = client.get(url).content.decode()
    assert '<select name="attr__plan"' in html
    assert '<option value="free" selected>free</option>' in html
    assert '<input type="number" name="attr__employees"' in html
    assert '<input type="date" name="attr__renewal"' in html
    assert '<select name="attr__vip"' in html
    assert "Advanced: custom attributes as JSON" in html

    response = client.post(url, {
        "email": ann.email, "lifecycle_stage": "lead", "consent_status": "unknown", "consent_at_0": "",
        "consent_at_1": "", "attributes": '{"plan": "free", "vip": true}', "initial-attributes": "",
        "attr__plan": "enterprise", "attr__employees": "250", "attr__renewal": "2027-01-31", "attr__vip": "true"})
    assert response.status_code == 302, response.content.decode()[-3000:]
    ann.refresh_from_db()
    assert ann.attributes == {"plan": "enterprise", "employees": 250, "renewal": "2027-01-31", "vip": True}
