"""Hooks that queue syncs, the workflow step's service, the signed inbound webhook, the sweeper,
erasure, the signed outbound webhook connector, and who may do what in the admin."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from automation.crm.connectors import Fate, OutItem
from automation.crm.connectors.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookConnector, sign
from automation.crm.mapping import payloads_for
from automation.crm.models import CrmConnection, CrmSyncItem, CrmSyncLog, LogOutcome, SyncStatus
from automation.crm.services import (
    crm_contacts_changed,
    crm_resync_all,
    crm_sweep,
    crm_sync_request,
    inbound_source,
)
from automation.crm.vault import SecretUnavailable, connection_token, decrypt, encrypt
from contacts.models import Contact, Event
from contacts.pipeline import contacts_changed
from contacts.services import contact_erase
from core.testing.scores import score_set
from core.throttle import Rate, Throttle
from scoring.models import GradeBand
from scoring.services import scores_refresh

SECRET = "shared-signing-secret"


def test_a_contact_edit_through_the_pipeline_queues_one_sync_row(make_connection, make_contacts):
    # given an active connection and a contact
    conn = make_connection()
    (contact,) = make_contacts(1)
    # when the contact pipeline handles an edit (twice)
    contacts_changed(contact_ids=[contact.pk])
    contacts_changed(contact_ids=[contact.pk])
    # then one pending row, queued because the contact changed
    item = CrmSyncItem.objects.get(connection=conn, contact=contact)
    assert item.status == SyncStatus.PENDING
    assert item.reason == "contact"


def test_inactive_and_sandbox_connections_get_no_rows_from_hooks(make_connection, make_contacts):
    make_connection(is_active=False)
    make_connection(is_sandbox=True)
    (contact,) = make_contacts(1)
    assert crm_contacts_changed(contact_ids=[contact.pk], reason="contact") == 0
    assert not CrmSyncItem.objects.exists()


def test_a_grade_change_from_scoring_queues_a_sync(make_connection, make_contacts):
    # given a connection mapping the grade, and a synced-looking contact
    conn = make_connection(field_mapping={"grade": "lead_grade"})
    GradeBand.objects.create(grade="A", min_score=50, is_mql=True)
    (contact,) = make_contacts(1)
    # when scoring refreshes a contact whose cached score was stale (the ledger is empty: score -> 0)
    score_set(contact, 60, "A")
    scores_refresh(contact_ids=[contact.pk])
    # then the grade change reached the CRM queue
    assert Contact.objects.get(pk=contact.pk).grade == ""
    assert CrmSyncItem.objects.get(connection=conn, contact=contact).reason == "score"


def test_payloads_read_score_and_grade_with_their_contacts_no_row_being_0(make_connection, make_contacts,
                                                                          django_assert_num_queries):
    # given the mapping with score and grade, a scored contact and two that never scored
    conn = make_connection()
    contacts = make_contacts(3)
    score_set(contacts[0], 42, "B")
    # when their payloads are built: one query for all of them
    with django_assert_num_queries(1):
        payloads = {p.email: p for p in payloads_for(contact_ids=[c.pk for c in contacts], mapping=conn.field_mapping,
                                                     score_step=conn.score_step)}
    # then each has its values; no row is 0 and no grade, the same hash as a row holding them
    assert {email: (p.properties["lead_score"], p.properties["lead_grade"]) for email, p in payloads.items()} == {
        "lead0@example.com": (42, "B"), "lead1@example.com": (0, ""), "lead2@example.com": (0, "")}
    score_set(contacts[1], 0, "")
    assert F_hash(conn, contacts[1]) == payloads["lead1@example.com"].hash
    score_set(contacts[1], 9, "")  # within the score step: no sync due
    assert F_hash(conn, contacts[1]) == payloads["lead1@example.com"].hash
    score_set(contacts[1], 10, "")
    assert F_hash(conn, contacts[1]) != payloads["lead1@example.com"].hash


def test_sync_request_for_a_workflow_step_queues_even_unchanged(make_connection, make_contacts):
    conn = make_connection()
    (contact,) = make_contacts(1)
    first = crm_sync_request(contact_id=contact.pk)
    assert first.item_id is not None
    CrmSyncItem.objects.filter(pk=first.item_id).update(status=SyncStatus.SYNCED, synced_hash=F_hash(conn, contact))
    second = crm_sync_request(contact_id=contact.pk)
    assert second.item_id == first.item_id
    item = CrmSyncItem.objects.get(pk=first.item_id)
    assert item.status == SyncStatus.PENDING
    assert item.force is True
    assert second.payload is not None
    assert second.payload["email"] == contact.email


def F_hash(conn: CrmConnection, contact: Contact) -> str:  # noqa: N802
    return next(payloads_for(contact_ids=[contact.pk], mapping=conn.field_mapping, score_step=conn.score_step)).hash


def test_staging_without_a_sandbox_records_a_dry_run_and_sends_nothing(make_connection, make_contacts):
    conn = make_connection()
    (contact,) = make_contacts(1)
    result = crm_sync_request(contact_id=contact.pk, sandbox=True)
    assert result.dry_run is True
    assert not CrmSyncItem.objects.exists()
    entry = CrmSyncLog.objects.get(connection=conn, contact=contact)
    assert entry.outcome == LogOutcome.DRY_RUN
    assert contact.email in entry.message


def test_staging_with_a_sandbox_connection_queues_there(make_connection, make_contacts):
    make_connection()
    sandbox = make_connection(is_sandbox=True)
    (contact,) = make_contacts(1)
    result = crm_sync_request(contact_id=contact.pk, sandbox=True)
    assert result.connection_id == sandbox.pk
    assert CrmSyncItem.objects.get().connection_id == sandbox.pk


def test_resync_all_queues_every_contact_forced(make_connection, make_contacts):
    conn = make_connection()
    contacts = make_contacts(5)
    crm_contacts_changed(contact_ids=[contacts[0].pk], reason="contact")
    CrmSyncItem.objects.update(status=SyncStatus.SYNCED)
    assert crm_resync_all(connection=conn) == 5
    assert CrmSyncItem.objects.filter(connection=conn, status=SyncStatus.PENDING, force=True).count() == 5


def test_sweeper_releases_rows_whose_worker_died(make_connection, make_contacts):
    conn = make_connection()
    contacts = make_contacts(2)
    crm_contacts_changed(contact_ids=[c.pk for c in contacts], reason="contact")
    long_ago = timezone.now() - dt.timedelta(minutes=10)
    CrmSyncItem.objects.filter(contact=contacts[0]).update(status=SyncStatus.SENDING, claimed_at=long_ago,
                                                           claim_token="dead")
    CrmSyncItem.objects.filter(contact=contacts[1]).update(status=SyncStatus.SENDING, claimed_at=timezone.now(),
                                                           claim_token="alive")
    assert crm_sweep() == 1
    assert CrmSyncItem.objects.get(connection=conn, contact=contacts[0]).status == SyncStatus.PENDING
    assert CrmSyncItem.objects.get(connection=conn, contact=contacts[1]).status == SyncStatus.SENDING


def test_erasing_a_contact_removes_its_sync_rows_and_log(make_connection, make_contacts):
    conn = make_connection()
    (contact,) = make_contacts(1)
    crm_sync_request(contact_id=contact.pk)
    crm_sync_request(contact_id=contact.pk, dry_run=True)
    contact_erase(contact=contact, actor=None)
    assert not CrmSyncItem.objects.filter(connection=conn).exists()
    assert not CrmSyncLog.objects.filter(connection=conn).exists()


def test_tokens_are_encrypted_at_rest_and_env_tokens_win(monkeypatch):
    stored = encrypt("pat-123")
    assert "pat-123" not in stored
    assert decrypt(stored) == "pat-123"
    monkeypatch.setenv("LEADFLOW_CRM_HUBSPOT_TEST", "from-env")
    assert connection_token(token_env="LEADFLOW_CRM_HUBSPOT_TEST", token_encrypted=stored) == "from-env"
    with pytest.raises(SecretUnavailable, match="LEADFLOW_CRM_NOT_SET"):
        connection_token(token_env="LEADFLOW_CRM_NOT_SET", token_encrypted="")


def test_throttle_pause_holds_back_every_sharer():
    a = Throttle("test:crm-pause", Rate(count=100, period=1, burst=1))
    b = Throttle("test:crm-pause", Rate(count=100, period=1, burst=1))
    a.reset()
    a.pause(30)
    grant = b.take(1)
    assert grant.granted == 0
    assert 29 <= grant.wait <= 30.01


# --- Inbound -------------------------------------------------------------------------------------------


def post_signed(client: Any, conn: CrmConnection, payload: Any, *, secret: str = SECRET,
                timestamp: int | None = None) -> Any:
    body = json.dumps(payload).encode()
    ts = str(timestamp if timestamp is not None else int(time.time()))
    return client.post(reverse("crm:inbound-status", args=[conn.pk]), data=body, content_type="application/json",
                       headers={TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(secret, ts, body)})


def test_signed_status_changes_become_events_once(client, make_connection, make_contacts):
    # given a connection with a signing secret and a known contact
    conn = make_connection(signing_secret_encrypted=encrypt(SECRET))
    (contact,) = make_contacts(1)
    changes = {"changes": [
        {"email": contact.email.upper(), "status": "accepted", "id": "chg-1", "reason": "good fit"},
        {"email": "nobody@example.com", "status": "rejected", "id": "chg-2"},
        {"email": contact.email, "status": "won"},
    ]}
    # when the CRM reports them (twice)
    first = post_signed(client, conn, changes)
    second = post_signed(client, conn, changes)
    # then the known contact's change is one event for scoring and workflows; the rest are item errors
    assert first.status_code == 207
    assert first.json()["accepted"] == 1
    assert [e["index"] for e in first.json()["errors"]] == [1, 2]
    assert second.json()["duplicates"] == 1
    event = Event.objects.get(source=inbound_source(conn))
    assert event.contact_id == contact.pk
    assert event.event_type == "crm_accepted"
    assert event.properties == {"status": "accepted", "reason": "good fit"}
    assert event.processed_at is None  # the events queue scores it
    assert CrmSyncLog.objects.filter(contact=contact, outcome=LogOutcome.INBOUND).count() == 1


@pytest.mark.parametrize("problem", ["wrong secret", "stale timestamp", "unsigned"])
def test_inbound_refuses_what_is_not_signed_by_the_connection(client, make_connection, make_contacts, problem):
    conn = make_connection(signing_secret_encrypted=encrypt(SECRET))
    (contact,) = make_contacts(1)
    payload = {"changes": [{"email": contact.email, "status": "closed"}]}
    if problem == "unsigned":
        response = client.post(reverse("crm:inbound-status", args=[conn.pk]), data=payload,
                               content_type="application/json")
    else:
        response = post_signed(client, conn, payload, secret="other" if problem == "wrong secret" else SECRET,
                               timestamp=int(time.time()) - 3600 if problem == "stale timestamp" else None)
    assert response.status_code == 401
    assert not Event.objects.exists()


def test_inbound_rejects_bad_bodies_with_a_message(client, make_connection):
    conn = make_connection(signing_secret_encrypted=encrypt(SECRET))
    response = post_signed(client, conn, {"changes": []})
    assert response.status_code == 400
    assert "changes" in response.json()["error"]["message"]


# --- Outbound webhook ----------------------------------------------------------------------------------


def test_webhook_connector_signs_the_body_and_reads_per_item_results():
    seen: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.update(body=body, ts=self.headers[TIMESTAMP_HEADER], sig=self.headers[SIGNATURE_HEADER])
            answer = json.dumps({"results": [{"email": "b@example.com", "status": "error",
                                              "message": "owner unknown"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connector = WebhookConnector(url=f"http://127.0.0.1:{server.server_address[1]}/hook", token="",
                                     secret=SECRET, timeout=5)
        result = connector.send([OutItem(1, "a@example.com", {"x": 1}), OutItem(2, "b@example.com", {})])
    finally:
        server.shutdown()
        server.server_close()
    assert seen["sig"] == sign(SECRET, seen["ts"], seen["body"])
    assert json.loads(seen["body"])["contacts"][0] == {"email": "a@example.com", "properties": {"x": 1}}
    assert result.fate is Fate.DONE
    assert result.items["a@example.com"].ok
    assert not result.items["b@example.com"].ok
    assert result.items["b@example.com"].error == "owner unknown"


# --- Admin and roles -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "may_view", "may_add"), [
    ("marketer", True, False), ("sales", False, False), ("ops", True, True), ("outsider", False, False),
])
def test_connection_admin_by_role(client, role_users, role, may_view, may_add):
    client.force_login(role_users[role])
    listing = client.get(reverse("admin:crm_crmconnection_changelist"))
    adding = client.get(reverse("admin:crm_crmconnection_add"))
    assert (listing.status_code == 200) is may_view
    assert (adding.status_code == 200) is may_add


@pytest.mark.parametrize(("role", "may_view"), [("sales", True), ("ops", True), ("outsider", False)])
def test_sync_log_and_error_list_by_role(client, role_users, role, may_view):
    client.force_login(role_users[role])
    assert (client.get(reverse("admin:crm_crmsynclog_changelist")).status_code == 200) is may_view
    assert (client.get(reverse("admin:crm_crmsyncitem_changelist")).status_code == 200) is may_view


def test_ops_adds_a_connection_with_an_encrypted_token_and_resyncs_all(client, role_users, make_contacts):
    make_contacts(3)
    client.force_login(role_users["ops"])
    response = client.post(reverse("admin:crm_crmconnection_add"), {
        "name": "HubSpot prod", "kind": "hubspot", "base_url": "https://api.hubapi.com", "token_env": "",
        "token": "pat-secret", "signing_secret": "", "field_mapping": json.dumps({"first_name": "firstname"}),
        "score_step": 10, "rate_limit": "100/10s", "batch_size": 100, "timeout_seconds": 30, "is_active": "on",
        "api_version": "2026-03", "account_time_zone": "Europe/Berlin", "value_mapping": "{}",
    })
    assert response.status_code == 302, response.content[:2000]
    conn = CrmConnection.objects.get(name="HubSpot prod")
    assert "pat-secret" not in conn.token_encrypted
    assert decrypt(conn.token_encrypted) == "pat-secret"
    client.post(reverse("admin:crm_crmconnection_changelist"),
                {"action": "resync_all", "_selected_action": [conn.pk]})
    assert CrmSyncItem.objects.filter(connection=conn, status=SyncStatus.PENDING).count() == 3


def test_marketer_retries_a_failed_item_from_the_error_list(client, role_users, make_connection, make_contacts):
    conn = make_connection()
    (contact,) = make_contacts(1)
    crm_contacts_changed(contact_ids=[contact.pk], reason="contact")
    CrmSyncItem.objects.update(status=SyncStatus.FAILED, last_error="VALIDATION_ERROR: bad")
    client.force_login(role_users["marketer"])
    listing = client.get(reverse("admin:crm_crmsyncerror_changelist"))
    assert b"VALIDATION_ERROR: bad" in listing.content
    item = CrmSyncItem.objects.get(connection=conn)
    client.post(reverse("admin:crm_crmsyncerror_changelist"), {"action": "retry", "_selected_action": [item.pk]})
    assert CrmSyncItem.objects.get(pk=item.pk).status == SyncStatus.PENDING


def test_bad_mapping_and_rate_are_refused_with_the_reason(make_connection):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as exc:
        make_connection(field_mapping={"password": "x"}, rate_limit="fast", batch_size=500)
    assert set(exc.value.message_dict) == {"field_mapping", "rate_limit", "batch_size"}


def test_inbound_refuses_oversized_bodies_before_reading_them(client, make_connection):
    conn = make_connection(signing_secret_encrypted=encrypt(SECRET))
    response = post_signed(client, conn, {"changes": [{"email": "a@example.com", "status": "closed",
                                                       "reason": "x" * 600_000}]})
    assert response.status_code == 413
    assert not Event.objects.exists()
