"""Lead owners (issue 19): assigned by hand on the contact page and in bulk, routed by rules when a
lead becomes an MQL (round robin, by country, segment or company), audited, told through the outbox
by notify_sales, and sent to the CRM where the owner field is mapped."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from automation.crm.mapping import payloads_for
from automation.tests.conftest import advance, deploy, wf_file
from campaigns.models import Message
from conftest import make_user
from contacts.models import Contact, LeadRouting, LeadRoutingRule, Segment, SegmentMembership
from contacts.pipeline import events_process, events_process_pending
from core import roles
from core.models import AuditEntry
from core.queues import get_connection
from scoring.tests.factories import bands, behaviour_rule, event

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()


@pytest.fixture
def marketer(role_users: dict[str, User]) -> Client:
    client = Client()
    client.force_login(role_users["marketer"])
    return client


def change_form(contact: Contact, **fields: Any) -> dict[str, Any]:
    return {"email": contact.email, "lifecycle_stage": contact.lifecycle_stage, "consent_status": "unknown",
            "attributes": "{}", "consent_at_0": "", "consent_at_1": "", **fields}


def test_a_marketer_assigns_an_owner_on_the_contact_page_among_sales_users(marketer: Client,
                                                                           role_users: dict[str, User]) -> None:
    rep = role_users["sales"]
    lead = Contact.objects.create(email="ann@acme.example")
    page = marketer.get(f"/admin/contacts/contact/{lead.pk}/change/").content.decode()
    assert f'<option value="{rep.pk}">sales</option>' in page
    assert f'<option value="{role_users["ops"].pk}">' not in page  # owners are Sales users

    response = marketer.post(f"/admin/contacts/contact/{lead.pk}/change/", change_form(lead, owner=rep.pk))
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert Contact.objects.get(pk=lead.pk).owner == rep
    entry = AuditEntry.objects.get(action="contact.owner_changed")
    assert (entry.target_id, entry.data["from"], entry.data["to"]) == (str(lead.pk), None, rep.pk)


def test_owners_are_assigned_in_bulk_from_the_contact_list(marketer: Client, role_users: dict[str, User]) -> None:
    rep = role_users["sales"]
    ann, bob = Contact.objects.create(email="ann@x.example"), Contact.objects.create(email="bob@x.example")
    ask = marketer.post("/admin/contacts/contact/", {"action": "assign_owner", "_selected_action": [ann.pk, bob.pk]})
    assert ask.status_code == 200
    assert "Assign an owner" in ask.content.decode()
    done = marketer.post("/admin/contacts/contact/", {"action": "assign_owner", "_selected_action": [ann.pk, bob.pk],
                                                      "post": "yes", "owner": rep.pk})
    assert done.status_code == 302
    assert set(Contact.objects.values_list("owner_id", flat=True)) == {rep.pk}
    assert AuditEntry.objects.filter(action="contact.owner_changed").count() == 2


def test_new_mqls_are_routed_by_rule_and_their_owner_is_told_through_the_outbox(sender: Any) -> None:
    rep1, rep2, rep3 = (make_user(name, roles.SALES) for name in ("rep1", "rep2", "rep3"))
    bands()
    behaviour_rule("Demo request", "demo_request", points=70)
    germany = LeadRoutingRule.objects.create(name="DACH", position=1, match=LeadRouting.COUNTRY, countries="DE, AT")
    germany.owners.set([rep1, rep2])
    enterprise = Segment.objects.create(name="Enterprise",
                                        definition={"field": "company", "op": "eq", "value": "BigCo"})
    by_segment = LeadRoutingRule.objects.create(name="Enterprise", position=2, match=LeadRouting.SEGMENT,
                                                segment=enterprise)
    by_segment.owners.set([rep3])
    deploy(wf_file("tell-owner", trigger={"type": "event", "event": "became_mql"},
                   steps=[{"id": "tell", "type": "notify_sales", "email": "owner", "message": "New MQL"}]))
    leads = [Contact.objects.create(email=f"de{n}@x.example", country="DE") for n in range(3)]
    big = Contact.objects.create(email="big@x.example", country="US", company="BigCo")
    SegmentMembership.objects.create(segment=enterprise, contact=big)
    nobody = Contact.objects.create(email="nobody@x.example", country="US")
    kept = Contact.objects.create(email="kept@x.example", country="DE", owner=rep3)

    for contact in [*leads, big, nobody, kept]:
        events_process(event_ids=[event(contact, "demo_request").pk])
    events_process_pending()  # the became_mql events
    advance()

    owners = dict(Contact.objects.values_list("email", "owner__username"))
    assert [owners[f"de{n}@x.example"] for n in range(3)] == ["rep1", "rep2", "rep1"]  # in turn
    assert owners["big@x.example"] == "rep3"
    assert owners["nobody@x.example"] is None  # no rule matches
    assert owners["kept@x.example"] == "rep3"  # a person's choice is never overridden
    told = sorted(Message.objects.filter(internal=True).values_list("to_email", flat=True))
    assert told == ["rep1@example.com", "rep1@example.com", "rep2@example.com", "rep3@example.com",
                    "rep3@example.com"]
    assert AuditEntry.objects.filter(action="contact.owner_changed", data__source="routing rule DACH").count() == 3


def test_the_crm_gets_the_owner_where_the_owner_field_is_mapped(role_users: dict[str, User]) -> None:
    lead = Contact.objects.create(email="ann@x.example", owner=role_users["sales"])
    loose = Contact.objects.create(email="bob@x.example")
    payloads = {p.email: p.properties for p in payloads_for(contact_ids=[lead.pk, loose.pk],
                                                             mapping={"owner_email": "leadflow_owner"},
                                                             score_step=1, values={})}
    assert payloads["ann@x.example"]["leadflow_owner"] == "sales@example.com"
    assert payloads["bob@x.example"]["leadflow_owner"] == ""


def test_routing_listens_for_the_event_scoring_writes() -> None:
    from contacts.owners import MQL_EVENT
    from scoring.services import MQL_EVENT as SCORING_MQL_EVENT

    assert MQL_EVENT == SCORING_MQL_EVENT
