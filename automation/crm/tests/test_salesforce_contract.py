"""Issue 16, item 5: Salesforce against a fake written from Salesforce's REST API documentation
(automation/crm/fakes_salesforce.py): OAuth client credentials refreshed before expiry, sObject
Collections upsert by an external id (200 per request, allOrNone false, per-record errors),
Sforce-Limit-Info and REQUEST_LIMIT_EXCEEDED, value mapping, inbound status."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from automation.crm.connectors import OutItem
from automation.crm.connectors.salesforce import SalesforceConnector
from automation.crm.fakes_salesforce import FakeSalesforce, FakeSalesforceConfig
from automation.crm.models import CrmConnection, CrmSyncItem, SyncStatus
from automation.crm.services import crm_contacts_changed, crm_retry_failed, crm_sync_batch
from automation.crm.vault import encrypt
from contacts.models import Contact
from core.models import Incident

from .conftest import drain, env_for

SF_MAPPING = {"first_name": "FirstName", "company": "Company", "score": "Lead_Score__c",
              "attributes.status": "Status"}


@pytest.fixture
def fake_salesforce() -> Iterator[Callable[..., FakeSalesforce]]:
    started: list[FakeSalesforce] = []

    def start(**config: Any) -> FakeSalesforce:
        fake = FakeSalesforce(FakeSalesforceConfig(**config)).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def sf_connection(make_connection):
    def make(fake: FakeSalesforce, **fields: Any) -> CrmConnection:
        return make_connection(fake, **{
            "kind": "salesforce", "client_id": fake.config.client_id, "api_version": "v62.0", "sf_object": "Lead",
            "external_id_field": "Leadflow_Email__c", "field_mapping": SF_MAPPING, "batch_size": 200,
            "token_encrypted": encrypt(fake.config.client_secret), **fields})

    return make


def test_one_bad_picklist_value_among_200_leaves_the_other_199_synced(
        fake_salesforce, sf_connection, make_contacts, clock):
    # given 200 leads in one request, one with a Status the org's restricted picklist does not list
    fake = fake_salesforce()
    conn = sf_connection(fake)
    contacts = make_contacts(200)
    Contact.objects.update(attributes={"status": "new"})
    bad = contacts[150]
    Contact.objects.filter(pk=bad.pk).update(attributes={"status": "hot"})
    conn.value_mapping = {"attributes.status": {"new": "Open - Not Contacted"}}
    conn.save()
    crm_contacts_changed(contact_ids=[c.pk for c in contacts], reason="contact")
    # when the queue drains
    drain(conn, env_for(clock), clock)
    # then one request upserted 199 by the external id, with the mapped picklist value
    assert fake.stats.batch_sizes == [200]
    assert len(fake.stats.upserts) == 199
    record = fake.stats.records[contacts[0].email]
    assert record["Status"] == "Open - Not Contacted"
    assert record["Leadflow_Email__c"] == contacts[0].email
    assert record["Email"] == contacts[0].email
    assert record["Lead_Score__c"] == 0  # Salesforce takes JSON numbers for number fields
    item = CrmSyncItem.objects.get(connection=conn, contact=bad)
    assert item.status == SyncStatus.FAILED
    assert "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in item.last_error
    assert "bad value for restricted picklist field: hot" in item.last_error
    assert CrmSyncItem.objects.get(connection=conn, contact=contacts[0]).crm_id == record["Id"]
    # when the value mapping learns "hot" and the failed lead is retried, then it syncs
    conn.value_mapping = {"attributes.status": {"new": "Open - Not Contacted", "hot": "Working - Contacted"}}
    conn.full_clean()
    conn.save()
    assert crm_retry_failed(connection=conn) == 1
    drain(conn, env_for(clock), clock)
    assert fake.stats.records[bad.email]["Status"] == "Working - Contacted"


def test_the_token_is_refreshed_before_it_expires_and_once_after_a_revoked_session(fake_salesforce):
    fake = fake_salesforce()
    now = [0.0]
    connector = SalesforceConnector(base_url=fake.url, client_id=fake.config.client_id,
                                    client_secret=fake.config.client_secret, api_version="v62.0", sobject="Lead",
                                    external_id_field="Leadflow_Email__c", timeout=5, session_seconds=100,
                                    clock=lambda: now[0])
    item = [OutItem(1, "a@example.com", {"email": "a@example.com", "FirstName": "Ada"})]
    assert connector.send(item).items["a@example.com"].ok
    assert fake.stats.token_requests == 1
    now[0] = 79.0  # within 80 % of the session: the same token
    assert connector.send(item).items["a@example.com"].ok
    assert fake.stats.token_requests == 1
    now[0] = 81.0  # past 80 %: a fresh token before the old one runs out, no 401 seen
    assert connector.send(item).items["a@example.com"].ok
    assert fake.stats.token_requests == 2
    assert fake.stats.statuses[401] == 0
    fake.expire_tokens()  # an admin revoked the sessions: one 401, one fresh token, one resend
    assert connector.send(item).items["a@example.com"].ok
    assert fake.stats.statuses[401] == 1
    assert fake.stats.token_requests == 3


def test_wrong_client_credentials_fail_the_batch_with_the_reason(fake_salesforce, sf_connection, make_contacts,
                                                                 clock):
    fake = fake_salesforce()
    conn = sf_connection(fake, token_encrypted=encrypt("wrong"))
    crm_contacts_changed(contact_ids=[c.pk for c in make_contacts(2)], reason="contact")
    crm_sync_batch(connection_id=conn.pk, env=env_for(clock))
    errors = set(CrmSyncItem.objects.filter(connection=conn).values_list("last_error", flat=True))
    assert errors == {"token request: 400 Bad Request: invalid client credentials"}


def test_request_limit_exceeded_pauses_the_connection_and_opens_an_incident(
        fake_salesforce, sf_connection, make_contacts, clock):
    fake = fake_salesforce(daily_limit=3)
    fake.stats.api_used = 3  # other integrations spent the org's 24-hour allocation
    conn = sf_connection(fake)
    crm_contacts_changed(contact_ids=[c.pk for c in make_contacts(2)], reason="contact")
    env = env_for(clock)
    crm_sync_batch(connection_id=conn.pk, env=env)
    assert fake.stats.error_codes["REQUEST_LIMIT_EXCEEDED"] == 1
    conn.refresh_from_db()
    assert conn.paused_until is not None
    assert conn.paused_until > clock.now()
    assert {r.status for r in CrmSyncItem.objects.filter(connection=conn)} == {SyncStatus.PENDING}
    assert Incident.objects.filter(key=f"crm_daily_limit:{conn.pk}", resolved_at__isnull=True).exists()
    assert crm_sync_batch(connection_id=conn.pk, env=env).claimed == 0  # nothing while paused


def test_sforce_limit_info_at_the_limit_pauses_before_salesforce_refuses(
        fake_salesforce, sf_connection, make_contacts, clock):
    fake = fake_salesforce(daily_limit=1)
    conn = sf_connection(fake, batch_size=2)
    crm_contacts_changed(contact_ids=[c.pk for c in make_contacts(4)], reason="contact")
    env = env_for(clock)
    assert crm_sync_batch(connection_id=conn.pk, env=env).synced == 2  # its answer says api-usage=1/1
    assert crm_sync_batch(connection_id=conn.pk, env=env).claimed == 0
    assert fake.stats.error_codes["REQUEST_LIMIT_EXCEEDED"] == 0


def test_salesforce_connections_are_validated(fake_salesforce, sf_connection):
    fake = fake_salesforce()
    with pytest.raises(ValidationError) as exc:
        sf_connection(fake, api_version="v3", batch_size=500, client_id="", external_id_field="")
    assert set(exc.value.message_dict) == {"api_version", "batch_size", "client_id", "external_id_field"}


def test_inbound_status_changes_work_for_a_salesforce_connection(fake_salesforce, sf_connection, make_contacts):
    from automation.crm.services import crm_inbound_status

    conn = sf_connection(fake_salesforce())
    (contact,) = make_contacts(1)
    result = crm_inbound_status(connection=conn, items=[{"email": contact.email, "status": "accepted", "id": "sf-1"}])
    assert result.accepted == 1


def test_ops_adds_a_salesforce_connection_in_the_admin(client, role_users):
    import json

    from django.urls import reverse

    from automation.crm.vault import decrypt

    client.force_login(role_users["ops"])
    form = {"name": "Salesforce prod", "kind": "salesforce", "base_url": "https://acme.my.salesforce.com",
            "api_version": "v62.0", "client_id": "3MVG9-consumer-key", "sf_object": "Contact",
            "external_id_field": "Leadflow_Email__c", "token_env": "", "token": "consumer-secret",
            "field_mapping": json.dumps({"first_name": "FirstName"}), "value_mapping": "{}", "score_step": 10,
            "rate_limit": "25/s", "batch_size": 300, "timeout_seconds": 30, "account_time_zone": "UTC",
            "is_active": "on"}
    refused = client.post(reverse("admin:crm_crmconnection_add"), form)
    assert b"at most 200 records" in refused.content
    form["batch_size"] = 200
    assert client.post(reverse("admin:crm_crmconnection_add"), form).status_code == 302
    conn = CrmConnection.objects.get(name="Salesforce prod")
    assert (conn.kind, conn.sf_object, conn.external_id_field) == ("salesforce", "Contact", "Leadflow_Email__c")
    assert decrypt(conn.token_encrypted) == "consumer-secret"
