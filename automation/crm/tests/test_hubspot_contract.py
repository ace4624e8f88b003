"""Issue 16: the sync against a fake written from HubSpot's documentation (automation/crm/fakes.py):
one bad contact never fails its neighbours (207 by objectWriteTraceId; a 400 is split until the bad
ones fail alone), enumeration values mapped to HubSpot's names and sent as strings, ten-secondly and
daily limits told apart, the API version per connection."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from automation.crm.fakes import default_properties
from automation.crm.models import CrmConnection, CrmSyncItem, CrmSyncLog, LogOutcome, SyncStatus
from automation.crm.services import (
    crm_contacts_changed,
    crm_retry_failed,
    crm_sync_batch,
    next_daily_reset,
)
from contacts.models import Contact
from core.models import Incident

from .conftest import drain, env_for

PLANS = {**default_properties(), "plan": {"type": "enumeration", "options": ["free", "pro", "enterprise"]}}


def hundred_with_one_bad_plan(make_contacts):
    contacts = make_contacts(100)
    Contact.objects.filter(pk__in=[c.pk for c in contacts]).update(attributes={"plan": "pro"})
    bad = contacts[37]
    Contact.objects.filter(pk=bad.pk).update(attributes={"plan": "gold"})  # not an option of HubSpot's `plan`
    return contacts, bad


@pytest.mark.parametrize("multi_status", [True, False], ids=["207-by-trace-id", "400-split"])
def test_one_invalid_contact_among_100_leaves_the_other_99_synced(
        multi_status, fake_hubspot, make_connection, make_contacts, clock, client, role_users):
    # given 100 contacts in one batch, one of them with a plan HubSpot's enumeration does not list
    fake = fake_hubspot(properties=PLANS, multi_status=multi_status)
    conn = make_connection(fake)
    contacts, bad = hundred_with_one_bad_plan(make_contacts)
    crm_contacts_changed(contact_ids=[c.pk for c in contacts], reason="contact")
    # when the queue drains
    drain(conn, env_for(clock), clock)
    # then the 99 are in HubSpot once each and the bad one failed alone with HubSpot's message
    assert set(fake.stats.upserts) == {c.email for c in contacts} - {bad.email}
    assert set(fake.stats.upserts.values()) == {1}
    rows = {r.contact_id: r for r in CrmSyncItem.objects.filter(connection=conn)}
    assert [cid for cid, r in rows.items() if r.status != SyncStatus.SYNCED] == [bad.pk]
    failed = rows[bad.pk]
    assert failed.status == SyncStatus.FAILED
    assert "VALIDATION_ERROR" in failed.last_error
    assert "INVALID_OPTION" in failed.last_error
    assert "gold was not one of the allowed options" in failed.last_error
    if multi_status:
        assert fake.stats.statuses[207] == 1
        assert fake.stats.statuses[400] == 0
    else:  # bisected: every request was refused or applied, and the bad contact was sent alone once
        assert fake.stats.statuses[400] >= 2
        assert fake.stats.rejected[bad.email] == 1
    # and it is visible in the admin's error list
    client.force_login(role_users["marketer"])
    listing = client.get(reverse("admin:crm_crmsyncerror_changelist"))
    assert bad.email.encode() in listing.content
    assert b"INVALID_OPTION" in listing.content
    # when the mapping is fixed (gold is sold as HubSpot's "enterprise") and the failed row retried
    conn.value_mapping = {"attributes.plan": {"gold": "enterprise"}}
    conn.full_clean()
    conn.save()
    assert crm_retry_failed(connection=conn) == 1
    drain(conn, env_for(clock), clock)
    # then it syncs with the CRM's value
    assert CrmSyncItem.objects.get(connection=conn, contact=bad).status == SyncStatus.SYNCED
    assert fake.stats.records[bad.email]["properties"]["plan"] == "enterprise"


def test_every_input_carries_a_unique_trace_id_and_values_are_strings(make_contacts):
    from automation.crm.connectors import OutItem
    from automation.crm.connectors.hubspot import HubSpotConnector

    connector = HubSpotConnector(base_url="https://api.hubapi.com", token="t", timeout=1)
    body = connector.request_body([OutItem(1, "a@example.com", {"lead_score": 12, "opted": True, "ratio": 0.5,
                                                               "company": None}),
                                   OutItem(2, "b@example.com", {"lead_score": 0})])
    assert [i["objectWriteTraceId"] for i in body["inputs"]] == ["1", "2"]
    assert body["inputs"][0]["properties"] == {"lead_score": "12", "opted": "true", "ratio": "0.5", "company": ""}


def test_lifecycle_stages_go_out_as_hubspots_internal_names(fake_hubspot, make_connection, make_contacts, clock):
    # given an MQL and an SQL, and a connection mapping lifecycle_stage to lifecyclestage (no value mapping typed)
    fake = fake_hubspot()
    conn = make_connection(fake)
    mql, sql, lead = make_contacts(3)
    Contact.objects.filter(pk=mql.pk).update(lifecycle_stage="mql")
    Contact.objects.filter(pk=sql.pk).update(lifecycle_stage="sql")
    Contact.objects.filter(pk=lead.pk).update(lifecycle_stage="lead")
    crm_contacts_changed(contact_ids=[mql.pk, sql.pk, lead.pk], reason="contact")
    drain(conn, env_for(clock), clock)
    # then HubSpot accepted them under its own names
    stages = {e: r["properties"]["lifecyclestage"] for e, r in fake.stats.records.items()}
    assert stages == {mql.email: "marketingqualifiedlead", sql.email: "salesqualifiedlead", lead.email: "lead"}
    assert not CrmSyncItem.objects.filter(connection=conn).exclude(status=SyncStatus.SYNCED).exists()


@pytest.mark.parametrize(("values", "problem"), [
    ({"lifecycle_stage": {"mql": " marketingqualifiedlead"}}, "whitespace"),
    ({"lifecycle_stage": {"hot": "marketingqualifiedlead"}}, "not one of our values"),
    ({"lifecycle_stage": {"mql": ""}}, "non-empty"),
    ({"job_title": {"CEO": "ceo"}}, "not in the field mapping"),
    ([1], "JSON object"),
])
def test_value_mapping_is_validated_at_save(make_connection, values, problem):
    with pytest.raises(ValidationError) as exc:
        make_connection(value_mapping=values)
    assert problem in exc.value.message_dict["value_mapping"][0]


def test_value_mapping_is_edited_in_the_admin_and_overrides_the_default(client, role_users, make_connection):
    conn = make_connection()
    client.force_login(role_users["ops"])
    url = reverse("admin:crm_crmconnection_change", args=[conn.pk])
    page = client.get(url)
    assert b"marketingqualifiedlead" in page.content  # the value mapping in force is shown
    form = {"name": conn.name, "kind": "hubspot", "base_url": conn.base_url, "api_version": "v3", "token_env": "",
            "field_mapping": json.dumps(conn.field_mapping), "score_step": 10, "rate_limit": "1000/s",
            "batch_size": 100, "timeout_seconds": 5, "account_time_zone": "UTC", "is_active": "on",
            "value_mapping": json.dumps({"lifecycle_stage": {"mql": "hot lead "}})}
    refused = client.post(url, form)
    assert refused.status_code == 200
    assert b"leading or trailing whitespace" in refused.content
    form["value_mapping"] = json.dumps({"lifecycle_stage": {"mql": "custom_mql_stage"}})
    assert client.post(url, form).status_code == 302
    conn.refresh_from_db()
    assert conn.values()["lifecycle_stage"]["mql"] == "custom_mql_stage"
    assert conn.values()["lifecycle_stage"]["sql"] == "salesqualifiedlead"


def test_the_date_versioned_path_is_used_when_configured(fake_hubspot, make_connection, make_contacts, clock):
    fake = fake_hubspot()
    conn = make_connection(fake, api_version="2026-03")
    crm_contacts_changed(contact_ids=[c.pk for c in make_contacts(2)], reason="contact")
    drain(conn, env_for(clock), clock)
    assert fake.stats.paths == {"2026-03": 1}
    with pytest.raises(ValidationError) as exc:
        make_connection(api_version="v4")
    assert "YYYY-MM" in exc.value.message_dict["api_version"][0]


def test_a_daily_429_pauses_the_connection_until_the_accounts_midnight_and_opens_an_incident(
        fake_hubspot, make_connection, make_contacts, clock):
    from core.alerts import alerts_check

    # given a HubSpot account whose daily budget another client has spent
    fake = fake_hubspot(daily_limit=5)
    fake.stats.daily_used = 5
    conn = make_connection(fake, account_time_zone="America/New_York")
    contacts = make_contacts(3)
    crm_contacts_changed(contact_ids=[c.pk for c in contacts], reason="contact")
    env = env_for(clock)
    # when a batch goes out
    result = crm_sync_batch(connection_id=conn.pk, env=env)
    # then HubSpot said DAILY once, and the connection is paused until midnight in New York
    assert fake.stats.policies == {"DAILY": 1}
    conn.refresh_from_db()
    assert conn.paused_until == next_daily_reset(clock.now(), "America/New_York")
    assert result.synced == 0
    rows = list(CrmSyncItem.objects.filter(connection=conn))
    assert {r.status for r in rows} == {SyncStatus.PENDING}
    assert {r.next_attempt_at for r in rows} == {conn.paused_until}
    assert all(r.attempts == 0 for r in rows)
    incident = Incident.objects.get(key=f"crm_daily_limit:{conn.pk}", resolved_at__isnull=True)
    assert "daily API limit" in incident.summary
    assert alerts_check(now=clock.now())["resolved"] == 0  # still firing while paused
    # and nothing is sent (no retry every 10 s) while paused
    clock.advance(3600)
    assert crm_sync_batch(connection_id=conn.pk, env=env).claimed == 0
    assert fake.stats.statuses[429] == 1
    # when the account's day turns over, then everything syncs and the incident resolves
    fake.new_day()
    clock.at = conn.paused_until
    drain(conn, env, clock)
    assert set(fake.stats.upserts) == {c.email for c in contacts}
    assert alerts_check(now=clock.now())["resolved"] >= 1
    assert not Incident.objects.filter(key=f"crm_daily_limit:{conn.pk}", resolved_at__isnull=True).exists()


def test_daily_remaining_zero_pauses_before_hubspot_has_to_say_429(fake_hubspot, make_connection, make_contacts,
                                                                  clock):
    # given a daily budget of one request
    fake = fake_hubspot(daily_limit=1)
    conn = make_connection(fake, batch_size=2)
    crm_contacts_changed(contact_ids=[c.pk for c in make_contacts(4)], reason="contact")
    # when the queue is worked
    env = env_for(clock)
    first = crm_sync_batch(connection_id=conn.pk, env=env)
    second = crm_sync_batch(connection_id=conn.pk, env=env)
    # then the first batch went through, its X-HubSpot-RateLimit-Daily-Remaining: 0 paused the connection,
    # and no 429 was provoked
    assert first.synced == 2
    assert second.claimed == 0
    assert fake.stats.statuses[429] == 0
    conn.refresh_from_db()
    assert conn.paused_until is not None
    assert conn.paused_until > clock.now()
    assert CrmSyncLog.objects.filter(connection=conn, outcome=LogOutcome.RATE_LIMITED,
                                     message__startswith="daily limit").exists()


def test_a_ten_secondly_429_is_told_apart_from_the_daily_one(fake_hubspot, make_connection, make_contacts, clock):
    import time

    fake = fake_hubspot(limit=1, window=1.0)
    conn = make_connection(fake)
    crm_contacts_changed(contact_ids=[c.pk for c in make_contacts(2)], reason="contact")
    assert fake.admit()[0] is None  # another client spent the rolling window
    env = env_for(clock)
    env.sleep = time.sleep
    result = crm_sync_batch(connection_id=conn.pk, env=env)
    assert fake.stats.policies == {"TEN_SECONDLY_ROLLING": 1}
    assert result.synced == 2  # waited out the interval and resent
    conn.refresh_from_db()
    assert conn.paused_until is None
    assert not Incident.objects.filter(key__startswith="crm_daily_limit").exists()


def test_the_daily_reset_is_midnight_in_the_accounts_time_zone():
    now = dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC)  # 03:00 in New York
    assert next_daily_reset(now, "America/New_York") == dt.datetime(2026, 12, 4, 5, 1, tzinfo=dt.UTC)
    assert next_daily_reset(now, "UTC") == dt.datetime(2026, 12, 4, 0, 1, tzinfo=dt.UTC)


def test_a_time_zone_that_does_not_exist_is_refused(make_connection):
    with pytest.raises(ValidationError) as exc:
        make_connection(account_time_zone="Mars/Olympus")
    assert "account_time_zone" in exc.value.message_dict


def test_connection_model_default_version_is_v3(make_connection):
    assert make_connection().api_version == "v3"
    assert CrmConnection._meta.get_field("account_time_zone").default == "UTC"
