"""CRM calls go through core.outbound (issue 14, item 3): internal base URLs are refused at save
and on the resolved address at connect time, redirects are not followed, and an error answer is
recorded as its status and reason phrase (HubSpot's documented error message at most), never its body."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError

from automation.crm.models import CrmConnection, CrmSyncItem, CrmSyncLog, SyncStatus
from automation.crm.services import crm_contacts_changed
from core.testing.receiver import Receiver

from .conftest import drain, env_for

INTERNAL = b"redis_version:7.2 internal-only answer"


def sync_one(conn, make_contacts, clock):
    (contact,) = make_contacts(1)
    crm_contacts_changed(contact_ids=[contact.pk], reason="contact")
    drain(conn, env_for(clock), clock)
    return CrmSyncItem.objects.get(connection=conn)


@pytest.mark.parametrize(("url", "problem"), [
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"), ("http://127.0.0.1:6379/", "loopback"),
    ("http://localhost:8000/", "loopback"), ("http://10.0.0.8/crm", "private"),
])
def test_an_internal_base_url_is_refused_at_save(make_connection, settings, url, problem):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    with pytest.raises(ValidationError) as exc:
        make_connection(base_url=url)
    assert problem in exc.value.message_dict["base_url"][0]


def test_an_on_premise_crm_is_allowed_by_the_setting(make_connection, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert make_connection(base_url="http://10.0.0.8/crm").pk


def test_a_loopback_crm_is_refused_at_connect_time(fake_hubspot, make_connection, make_contacts, clock, settings):
    # given a connection saved while loopback was allowed (as if its name resolved elsewhere then)
    fake = fake_hubspot()
    conn = make_connection(fake)
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    item = sync_one(conn, make_contacts, clock)
    assert fake.stats.requests == 0
    assert item.status == SyncStatus.FAILED  # permanent: retrying the same address will not help
    assert "127.0.0.1 is a loopback address" in item.last_error


@pytest.mark.parametrize("kind", [CrmConnection.Kind.WEBHOOK, CrmConnection.Kind.HUBSPOT])
def test_a_redirect_is_not_followed(make_connection, make_contacts, clock, kind):
    # given a CRM URL answering 307 to an internal port (a 307 re-sends the signed body and token)
    with Receiver(body=INTERNAL) as internal, \
            Receiver(status=307, headers={"Location": internal.url + "/"}, body=b"see other") as crm:
        conn = make_connection(kind=kind, base_url=crm.url + "/hook")
        item = sync_one(conn, make_contacts, clock)
        assert len(crm.hits) == 1
    assert internal.hits == []
    assert item.status == SyncStatus.FAILED
    assert item.last_error == "307 Temporary Redirect (redirects are not followed) from the CRM"


@pytest.mark.parametrize(("kind", "status"), [(CrmConnection.Kind.WEBHOOK, 400), (CrmConnection.Kind.HUBSPOT, 500),
                                              (CrmConnection.Kind.HUBSPOT, 401)])
def test_an_error_answer_is_recorded_without_its_body(make_connection, make_contacts, clock, kind, status):
    with Receiver(status=status, body=INTERNAL, headers={"Content-Type": "text/plain"}) as crm:
        conn = make_connection(kind=kind, base_url=crm.url)
        item = sync_one(conn, make_contacts, clock)
    assert item.status == SyncStatus.FAILED
    shown = [item.last_error, *CrmSyncLog.objects.filter(connection=conn).values_list("message", flat=True)]
    assert all(b"internal-only" not in text.encode() for text in shown)
    assert f"{status} " in item.last_error
    assert "from the CRM" in item.last_error


def test_hubspots_documented_error_message_is_kept_short(make_connection, make_contacts, clock):
    # HubSpot's error body: {"status": "error", "message": ..., "category": ...} (developers.hubspot.com,
    # "Error handling"); its message is the vendor's reason, capped
    body = json.dumps({"status": "error", "message": "Authentication credentials not found. " + "x" * 500,
                       "category": "INVALID_AUTHENTICATION", "correlationId": "a1"}).encode()
    with Receiver(status=401, body=body) as crm:
        conn = make_connection(base_url=crm.url)
        item = sync_one(conn, make_contacts, clock)
    assert item.last_error.startswith("401 Unauthorized from the CRM: INVALID_AUTHENTICATION: Authentication "
                                      "credentials not found.")
    assert len(item.last_error) < 300
