"""A CRM sync row carries the correlation id of the change that last queued it: the row is one
per contact and connection, so the latest change wins."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from automation import engine
from automation.crm.models import CrmSyncItem, SyncStatus
from automation.crm.services import crm_contacts_changed, crm_inbound_status, crm_sync_request
from automation.models import Enrollment
from automation.tests.conftest import deploy, wf_file
from contacts.models import Contact, Event
from contacts.pipeline import events_process
from core.logs import contact_causes, correlation_scope


def row(contact: Contact) -> CrmSyncItem:
    return CrmSyncItem.objects.get(contact=contact)


def rename(contact: Contact, first_name: str) -> None:
    Contact.objects.filter(pk=contact.pk).update(first_name=first_name)


def test_a_workflow_steps_row_takes_its_enrollments_id(make_connection, make_contacts) -> None:
    make_connection()
    deploy(wf_file(steps=[{"id": "sync", "type": "crm_sync"}]))
    ann = make_contacts(1)[0]
    event = Event.objects.create(contact=ann, event_type="signed_up", occurred_at=timezone.now(), source="api:t",
                                 correlation_id="req-ann")
    events_process(event_ids=[event.pk])
    enrollment = Enrollment.objects.get(contact=ann)
    with correlation_scope("wake-job"):
        engine.enrollment_advance(enrollment_id=enrollment.pk)
    assert row(ann).correlation_id == "req-ann"


def test_hooks_take_the_current_id_or_each_contacts_cause(make_connection, make_contacts) -> None:
    make_connection()
    ann, bob, cy = make_contacts(3)
    with correlation_scope("events-job"), contact_causes({ann.pk: "req-ann"}):
        crm_contacts_changed(contact_ids=[ann.pk, bob.pk], reason="score")
    crm_contacts_changed(contact_ids=[cy.pk], reason="contact", correlation_id="explicit-1")
    assert (row(ann).correlation_id, row(bob).correlation_id, row(cy).correlation_id) == (
        "req-ann", "events-job", "explicit-1")


def test_the_latest_change_wins_on_the_coalesced_row(make_connection, make_contacts) -> None:
    make_connection()
    synced, pending, unchanged, in_flight = make_contacts(4)
    with correlation_scope("first"):
        crm_contacts_changed(contact_ids=[c.pk for c in (synced, pending, unchanged, in_flight)], reason="contact")
    CrmSyncItem.objects.filter(contact=synced).update(status=SyncStatus.SYNCED, synced_hash="old")
    CrmSyncItem.objects.filter(contact=in_flight).update(status=SyncStatus.SENDING)
    for contact in (synced, pending, in_flight):
        rename(contact, "Changed")
    # when a second change touches all four
    with correlation_scope("second"):
        crm_contacts_changed(contact_ids=[c.pk for c in (synced, pending, unchanged, in_flight)], reason="contact")
    # then rows whose data changed name the second change; the unchanged pending one keeps the first
    assert (row(synced).status, row(synced).correlation_id) == (SyncStatus.PENDING, "second")
    assert (row(pending).status, row(pending).correlation_id) == (SyncStatus.PENDING, "second")
    assert row(unchanged).correlation_id == "first"
    assert (row(in_flight).dirty, row(in_flight).correlation_id) == (True, "second")


def test_a_forced_request_re_queues_under_its_id(make_connection, make_contacts) -> None:
    conn = make_connection()
    ann = make_contacts(1)[0]
    with correlation_scope("first"):
        crm_contacts_changed(contact_ids=[ann.pk], reason="contact")
    crm_sync_request(contact_id=ann.pk, connection=conn, correlation_id="step-of-enrollment")
    assert row(ann).correlation_id == "step-of-enrollment"


def test_status_events_from_the_crm_carry_the_webhooks_request_id(make_connection, make_contacts) -> None:
    conn = make_connection()
    ann = make_contacts(1)[0]
    with correlation_scope("crm-webhook-req"):
        result = crm_inbound_status(connection=conn, items=[{"email": ann.email, "status": "accepted", "id": "c1"}])
    assert result.accepted == 1
    assert Event.objects.get(pk=result.event_ids[0]).correlation_id == "crm-webhook-req"


def test_nothing_outside_a_request_or_job_invents_an_id(make_connection: Any, make_contacts: Any) -> None:
    make_connection()
    ann = make_contacts(1)[0]
    crm_contacts_changed(contact_ids=[ann.pk], reason="contact")
    assert row(ann).correlation_id == ""
