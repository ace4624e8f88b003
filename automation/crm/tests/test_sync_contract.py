"""Contract tests against the loopback fake HubSpot: batch upsert shapes, per-item errors, 429 with
Retry-After, 500s and timeouts. Every contact ends synced or visibly failed, none sent twice."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from automation.crm.connectors.hubspot import HubSpotConnector
from automation.crm.models import CrmSyncItem, CrmSyncLog, LogOutcome, SyncStatus
from automation.crm.services import (
    MAX_ATTEMPTS,
    backoff_delay,
    crm_contacts_changed,
    crm_retry_failed,
    crm_sync_batch,
)
from contacts.models import Contact
from core.testing.scores import score_set

from .conftest import drain, env_for


def statuses(conn):
    return dict(CrmSyncItem.objects.filter(connection=conn).values_list("contact__email", "status"))


def test_changed_contacts_are_upserted_in_batches_once_each(fake_hubspot, make_connection, make_contacts, clock):
    # given 250 contacts and a HubSpot connection taking 100 per batch
    fake = fake_hubspot()
    conn = make_connection(fake)
    contacts = make_contacts(250)
    # when they change and the queue drains
    assert crm_contacts_changed(contact_ids=[c.pk for c in contacts], reason="contact") == 250
    drain(conn, env_for(clock), clock)
    # then three requests carried every contact exactly once, with the mapped properties
    assert fake.stats.statuses[200] == 3
    assert set(fake.stats.upserts) == {c.email for c in contacts}
    assert set(fake.stats.upserts.values()) == {1}
    assert fake.stats.records["lead7@example.com"]["properties"]["firstname"] == "First7"
    assert fake.stats.records["lead7@example.com"]["properties"]["company"] == "Acme"
    assert set(statuses(conn).values()) == {SyncStatus.SYNCED}
    item = CrmSyncItem.objects.get(connection=conn, contact=contacts[7])
    assert item.crm_id == fake.stats.records["lead7@example.com"]["id"]
    assert CrmSyncLog.objects.filter(connection=conn, outcome=LogOutcome.SYNCED).count() == 250


def test_unchanged_payloads_are_not_queued_and_changes_coalesce(fake_hubspot, make_connection, make_contacts, clock):
    # given synced contacts
    fake = fake_hubspot()
    conn = make_connection(fake)
    contacts = make_contacts(3)
    ids = [c.pk for c in contacts]
    crm_contacts_changed(contact_ids=ids, reason="contact")
    drain(conn, env_for(clock), clock)
    # when nothing mapped changed, then nothing is queued
    assert crm_contacts_changed(contact_ids=ids, reason="contact") == 0
    Contact.objects.filter(pk=ids[0]).update(phone="+44 20 1234")  # not mapped
    assert crm_contacts_changed(contact_ids=ids, reason="contact") == 0
    # when one contact changes twice before the worker runs, then one row, one send
    Contact.objects.filter(pk=ids[1]).update(first_name="Ada")
    assert crm_contacts_changed(contact_ids=ids, reason="contact") == 1
    Contact.objects.filter(pk=ids[1]).update(first_name="Grace")
    crm_contacts_changed(contact_ids=ids, reason="contact")
    assert CrmSyncItem.objects.filter(connection=conn).count() == 3
    drain(conn, env_for(clock), clock)
    assert fake.stats.upserts["lead1@example.com"] == 2
    assert fake.stats.records["lead1@example.com"]["properties"]["firstname"] == "Grace"
    assert fake.stats.upserts["lead0@example.com"] == 1


def test_score_changes_queue_only_when_crossing_a_step(fake_hubspot, make_connection, make_contacts, clock):
    # given a synced contact at score 3, score mapped with a step of 10
    fake = fake_hubspot()
    conn = make_connection(fake, score_step=10)
    (contact,) = make_contacts(1)
    score_set(contact, 3)
    crm_contacts_changed(contact_ids=[contact.pk], reason="score")
    drain(conn, env_for(clock), clock)
    # when the score moves within the step, then nothing is queued; across it, one sync
    score_set(contact, 8)
    assert crm_contacts_changed(contact_ids=[contact.pk], reason="score") == 0
    score_set(contact, 12)
    assert crm_contacts_changed(contact_ids=[contact.pk], reason="score") == 1
    drain(conn, env_for(clock), clock)
    assert fake.stats.records["lead0@example.com"]["properties"]["lead_score"] == "12"  # HubSpot values are strings


def test_per_item_errors_fail_visibly_are_not_retried_and_can_be_retried_by_hand(
        fake_hubspot, make_connection, make_contacts, clock):
    # given a batch where two emails are rejected by the CRM
    fake = fake_hubspot()
    conn = make_connection(fake)
    good = make_contacts(5)
    bad = make_contacts(2, prefix="invalid")
    crm_contacts_changed(contact_ids=[c.pk for c in good + bad], reason="contact")
    # when it is sent
    drain(conn, env_for(clock), clock)
    # then the good ones are synced and the bad ones failed with the CRM's message (a 207 answer)
    assert fake.stats.statuses[207] == 1
    failed = CrmSyncItem.objects.filter(connection=conn, status=SyncStatus.FAILED)
    assert {i.contact.email for i in failed} == {c.email for c in bad}
    assert all("VALIDATION_ERROR" in i.last_error and "is invalid" in i.last_error for i in failed)
    assert set(fake.stats.upserts) == {c.email for c in good}
    # and an unchanged rejected contact is not pushed again
    assert crm_contacts_changed(contact_ids=[c.pk for c in bad], reason="contact") == 0
    drain(conn, env_for(clock), clock)
    assert sum(fake.stats.rejected.values()) == 2
    # when someone fixes the CRM side and retries by hand, then they sync
    fake.config.invalid = lambda email: False
    assert crm_retry_failed(connection=conn) == 2
    drain(conn, env_for(clock), clock)
    assert set(statuses(conn).values()) == {SyncStatus.SYNCED}


def test_server_errors_back_off_with_jitter_then_succeed(fake_hubspot, make_connection, make_contacts, clock):
    # given a CRM that answers 500 twice
    fake = fake_hubspot(fail_first=2)
    conn = make_connection(fake)
    contacts = make_contacts(10)
    crm_contacts_changed(contact_ids=[c.pk for c in contacts], reason="contact")
    env = env_for(clock)
    # when the first batch fails, then the rows wait for a backoff with the error recorded
    result = crm_sync_batch(connection_id=conn.pk, env=env)
    assert result.retrying == 10
    item = CrmSyncItem.objects.get(connection=conn, contact=contacts[0])
    assert item.status == SyncStatus.PENDING
    assert item.attempts == 1
    assert "500" in item.last_error
    assert clock.at + dt.timedelta(seconds=1) <= item.next_attempt_at
    assert crm_sync_batch(connection_id=conn.pk, env=env).claimed == 0  # not due yet
    # when time passes, then retries go out and succeed
    drain(conn, env, clock)
    assert set(statuses(conn).values()) == {SyncStatus.SYNCED}
    assert fake.stats.statuses[500] == 2
    assert set(fake.stats.upserts.values()) == {1}


def test_backoff_grows_is_capped_and_jittered():
    import random

    rng = random.Random(3)
    delays = [backoff_delay(attempt, rng=rng) for attempt in range(1, 15)]
    assert 1.0 <= delays[0] <= 2.0
    assert 64.0 <= delays[6] <= 128.0
    assert max(delays) <= 900.0
    assert len({round(d, 6) for d in delays[-4:]}) == 4  # capped, yet not all the same moment


def test_an_always_failing_crm_ends_in_visible_failure_after_max_attempts(
        fake_hubspot, make_connection, make_contacts, clock):
    fake = fake_hubspot(error_rate=1.0)
    conn = make_connection(fake)
    contacts = make_contacts(2)
    crm_contacts_changed(contact_ids=[c.pk for c in contacts], reason="contact")
    drain(conn, env_for(clock), clock)
    assert fake.stats.requests == MAX_ATTEMPTS
    for item in CrmSyncItem.objects.filter(connection=conn):
        assert item.status == SyncStatus.FAILED
        assert item.last_error.startswith(f"gave up after {MAX_ATTEMPTS} attempts: 500")


def test_timeouts_are_retried_and_nothing_is_applied_twice(fake_hubspot, make_connection, make_contacts, clock):
    # given a CRM whose first request hangs past our timeout
    fake = fake_hubspot(timeout_rate=1.0, hang_seconds=1.0)
    conn = make_connection(fake)
    contacts = make_contacts(3)
    crm_contacts_changed(contact_ids=[c.pk for c in contacts], reason="contact")
    connector = HubSpotConnector(base_url=fake.url, token="fake-token", timeout=0.2)
    env = env_for(clock, connector=connector)
    result = crm_sync_batch(connection_id=conn.pk, env=env)
    assert result.retrying == 3
    assert "timed out" in CrmSyncItem.objects.get(connection=conn, contact=contacts[0]).last_error
    # when the CRM recovers, then everything syncs once
    fake.config.timeout_rate = 0.0
    drain(conn, env, clock)
    assert set(fake.stats.upserts.values()) == {1}
    assert len(fake.stats.upserts) == 3


def test_spent_rate_limit_headers_pause_before_a_429_happens(fake_hubspot, make_connection, make_contacts, clock):
    # given a CRM allowing one request per second while our own limiter would allow more
    fake = fake_hubspot(limit=1, window=1.0)
    conn = make_connection(fake, batch_size=2)
    contacts = make_contacts(4)
    crm_contacts_changed(contact_ids=[c.pk for c in contacts], reason="contact")
    env = env_for(clock)
    env.sleep = time.sleep  # the shared limiter really waits (about a second)
    # when two batches go out back to back
    first = crm_sync_batch(connection_id=conn.pk, env=env)
    second = crm_sync_batch(connection_id=conn.pk, env=env)
    # then X-HubSpot-RateLimit-Remaining: 0 paused the connection and no 429 was provoked
    assert first.synced == 2
    assert second.synced == 2
    assert fake.stats.statuses[429] == 0


def test_429_pauses_the_shared_limit_and_resends_the_batch(fake_hubspot, make_connection, make_contacts, clock):
    # given another client of the same HubSpot account just spent the window
    fake = fake_hubspot(limit=1, window=1.0)
    conn = make_connection(fake)
    contacts = make_contacts(3)
    crm_contacts_changed(contact_ids=[c.pk for c in contacts], reason="contact")
    assert fake.admit()[0] is None  # admitted: the window is now spent
    env = env_for(clock)
    env.sleep = time.sleep  # Retry-After is really waited out (about a second)
    # when our batch goes out
    result = crm_sync_batch(connection_id=conn.pk, env=env)
    # then it met one 429, paused everyone sharing the limit for Retry-After, and the resend went through
    assert result.rate_limited == 1
    assert result.synced == 3
    assert fake.stats.statuses[429] == 1
    assert fake.stats.rate_limited_after_first == 0
    assert set(fake.stats.upserts.values()) == {1}
    assert len(fake.stats.upserts) == 3
    entry = CrmSyncLog.objects.get(connection=conn, outcome=LogOutcome.RATE_LIMITED, contact=None)
    assert entry.http_status == 429
    assert "Retry-After 1 s" in entry.message
    assert all(i.attempts == 0 for i in CrmSyncItem.objects.filter(connection=conn))  # not the items' fault


def test_random_faults_every_contact_ends_synced_or_failed_with_a_reason(
        fake_hubspot, make_connection, make_contacts, clock):
    # given a flaky CRM (20 % 500s, 5 % hangs) and some contacts it rejects
    fake = fake_hubspot(error_rate=0.2, timeout_rate=0.05, hang_seconds=0.5, seed=11)
    conn = make_connection(fake, batch_size=50)
    good = make_contacts(300)
    bad = make_contacts(7, prefix="invalid")
    crm_contacts_changed(contact_ids=[c.pk for c in good + bad], reason="contact")
    env = env_for(clock, connector=HubSpotConnector(base_url=fake.url, token="fake-token", timeout=0.2))
    # when the queue drains
    drain(conn, env, clock)
    # then each contact is synced (applied exactly once) or failed with the CRM's reason
    rows = list(CrmSyncItem.objects.filter(connection=conn).select_related("contact"))
    assert len(rows) == 307
    assert {r.contact.email for r in rows if r.status == SyncStatus.SYNCED} == {c.email for c in good}
    assert all(r.last_error.startswith("VALIDATION_ERROR") for r in rows if r.status == SyncStatus.FAILED)
    assert fake.stats.statuses[500] > 0
    assert set(fake.stats.upserts.values()) == {1}
    assert len(fake.stats.upserts) == 300


class ScriptedConnector:
    """Answers ok for every item, running `during` while the request is "in flight"."""

    def __init__(self, during):
        self.during = during

    def send(self, items):
        from automation.crm.connectors import Fate, ItemResult, SendResult

        self.during()
        return SendResult(Fate.DONE, 200, items={i.email: ItemResult(ok=True, crm_id="9") for i in items})


def test_a_row_reclaimed_while_in_flight_is_left_to_its_new_owner(make_connection, make_contacts, clock):
    # given two queued contacts
    conn = make_connection()
    first, second = make_contacts(2)
    crm_contacts_changed(contact_ids=[first.pk, second.pk], reason="contact")
    # when, mid-request, the sweeper hands the first row to another worker
    steal = lambda: CrmSyncItem.objects.filter(contact=first).update(claim_token="other-worker")  # noqa: E731
    crm_sync_batch(connection_id=conn.pk, env=env_for(clock, connector=ScriptedConnector(steal)))
    # then this batch records only the row it still holds
    assert CrmSyncItem.objects.get(contact=first).status == SyncStatus.SENDING
    assert CrmSyncItem.objects.get(contact=second).status == SyncStatus.SYNCED


def test_a_contact_changed_while_in_flight_is_sent_again(make_connection, make_contacts, clock):
    # given a queued contact
    conn = make_connection()
    (contact,) = make_contacts(1)
    crm_contacts_changed(contact_ids=[contact.pk], reason="contact")

    def edit():
        Contact.objects.filter(pk=contact.pk).update(first_name="Changed")
        crm_contacts_changed(contact_ids=[contact.pk], reason="contact")

    # when it changes while its batch is in flight
    crm_sync_batch(connection_id=conn.pk, env=env_for(clock, connector=ScriptedConnector(edit)))
    # then it is pending again, so the change goes out too
    item = CrmSyncItem.objects.get(contact=contact)
    assert item.status == SyncStatus.PENDING
    assert item.dirty is False


@pytest.mark.django_db(transaction=True)  # jobs leave after COMMIT
def test_a_backlog_offers_a_companion_job_so_a_second_worker_shares_the_limit(make_connection, make_contacts):
    from rq import Queue

    from automation.crm.services import _offer_companion, _queued_flag, crm_contacts_changed
    from core.queues import get_connection

    conn = make_connection(batch_size=10)
    crm_contacts_changed(contact_ids=[c.pk for c in make_contacts(25)], reason="test")
    redis = get_connection()
    redis.delete(_queued_flag(conn.pk))
    crm = Queue("crm", connection=redis)
    crm.empty()
    _offer_companion(conn.pk)  # 25 due rows > 2 batches: one more job
    assert crm.count == 1
    _offer_companion(conn.pk)  # the queued flag dedupes: still one
    assert crm.count == 1
    redis.delete(_queued_flag(conn.pk))
    crm.empty()
    CrmSyncItem.objects.filter(connection=conn).update(status=SyncStatus.SYNCED)
    _offer_companion(conn.pk)  # nothing due: no companion
    assert crm.count == 0
