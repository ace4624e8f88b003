"""The read replica router (config/db_router.py, issue 22) against a real streaming standby.

The standby is a `pg_basebackup -R` copy of the test suite's own PostgreSQL cluster, started on
another loopback port once for this module (core/testing/pgstandby.py) and removed after it. Which
database served a read is proven by the queries each connection ran (CaptureQueriesContext per
alias), and by rows the standby has not replayed (replay paused) showing up or not.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.db import connections, transaction
from django.http import HttpResponse
from django.test import Client
from django.test.client import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from automation.models import Workflow
from automation.tests.conftest import version
from automation.tests.test_email_reports import sent_message
from automation.utm import step_utm_cache_clear
from broadcasts.tests.conftest import make_broadcast, make_contacts
from config import db_router
from config.db_router import REPLICA, ReplicaScopeMiddleware, forget_health, replica_ok, replica_reads
from contacts.models import Contact
from core.alerts import alerts_check
from core.models import Incident
from core.testing.pgstandby import PostgresStandby
from scoring.views import lead_list

# Transactional: what a test writes is committed, so the standby can replay it (a TestCase's
# transaction would never reach it). The replica alias is a test mirror: never flushed or set up.
pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True, databases=["default", REPLICA])]

CONTACTS_TABLE = Contact._meta.db_table


@pytest.fixture(scope="module", autouse=True)
def standby(django_db_setup: None, django_db_blocker: Any) -> Iterator[PostgresStandby]:
    """A standby of the test database, and the `replica` alias on it (what DATABASE_REPLICA_URL sets
    up), for this module. Started after the test database exists, so the base backup holds it."""
    params = connections["default"].settings_dict
    node = PostgresStandby(primary_host=params["HOST"], primary_port=int(params["PORT"]), user=params["USER"],
                           dbname=params["NAME"]).start()
    connections.settings[REPLICA] = {**params, "PORT": str(node.port), "TEST": {**params["TEST"], "MIRROR": "default"}}
    yield node
    with django_db_blocker.unblock():
        connections[REPLICA].close()
    del connections[REPLICA]
    del connections.settings[REPLICA]
    node.remove()


@pytest.fixture
def replica(standby: PostgresStandby, settings: Any) -> Iterator[PostgresStandby]:
    """The standby, running and replaying, with a fresh health check and generous on lag unless a
    test says otherwise."""
    settings.DATABASE_REPLICA_MAX_LAG = 3600
    forget_health()
    yield standby
    connections[REPLICA].close()
    forget_health()
    if not standby.running:
        standby.resume()
    standby.resume_replay()


def tables_read(ctx: CaptureQueriesContext) -> str:
    return " ".join(q["sql"] for q in ctx.captured_queries)


@dataclass
class Served:
    status: int
    text: str  # the body, streamed content included
    on_primary: str  # the SQL each database ran for it
    on_replica: str


def get(client: Client, url: str, *, watch_replica: bool = True) -> Served:
    """GET url, recording the queries on each alias (not on a replica that is down: recording
    connects first)."""
    with CaptureQueriesContext(connections["default"]) as primary, \
            (CaptureQueriesContext(connections[REPLICA]) if watch_replica else nullcontext()) as on_replica:
        response: Any = client.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
    return Served(response.status_code, body.decode(), tables_read(primary),
                  tables_read(on_replica) if on_replica else "")


def sales_client(role_users: dict[str, Any]) -> Client:
    client = Client()
    client.force_login(role_users["sales"])
    return client


def test_the_replica_is_a_streaming_standby(replica: PostgresStandby) -> None:
    with connections[REPLICA].cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery()")
        assert cursor.fetchone() == (True,)
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery()")
        assert cursor.fetchone() == (False,)


def test_the_lead_views_and_export_read_from_the_replica(replica: PostgresStandby, role_users: dict[str, Any]) -> None:
    # given a lead written on the primary and replayed by the standby
    lead = Contact.objects.create(email="ada@example.com", first_name="Ada")
    replica.wait_for_primary()
    client = sales_client(role_users)
    # when Sales opens the lead list, the lead and its CSV export
    for url in (reverse("scoring:lead_list"), reverse("scoring:lead_detail", args=[lead.pk]),
                reverse("scoring:lead_export")):
        served = get(client, url)
        # then the contacts come from the replica, and the primary is not asked for them
        assert served.status == 200, url
        assert "ada@example.com" in served.text, url
        assert CONTACTS_TABLE in served.on_replica, url
        assert CONTACTS_TABLE not in served.on_primary, url
    # the score breakdown's raw SQL follows the router too
    assert "scoring_scoreentry" in get(client, reverse("scoring:lead_detail", args=[lead.pk])).on_replica


def test_the_contacts_csv_export_reads_from_the_replica(replica: PostgresStandby, role_users: dict[str, Any]) -> None:
    Contact.objects.create(email="ada@example.com", first_name="Ada")
    replica.wait_for_primary()
    client = Client()
    client.force_login(role_users["marketer"])
    with CaptureQueriesContext(connections["default"]) as primary, \
            CaptureQueriesContext(connections[REPLICA]) as on_replica:
        response = client.post("/admin/contacts/contact/export/", {
            "format": "0", "export_items": [], "resource": "0", "contactresource_email": "on"})
    assert response.status_code == 200
    assert [row["email"] for row in csv.DictReader(io.StringIO(response.content.decode()))] == ["ada@example.com"]
    assert CONTACTS_TABLE in tables_read(on_replica)
    assert f'FROM "{CONTACTS_TABLE}"' not in tables_read(primary)


def test_segment_previews_count_on_the_replica(replica: PostgresStandby, role_users: dict[str, Any]) -> None:
    Contact.objects.create(email="ada@example.com", lifecycle_stage="lead")
    replica.wait_for_primary()
    client = Client()
    client.force_login(role_users["marketer"])
    definition = '{"all": [{"field": "lifecycle_stage", "op": "eq", "value": "lead"}]}'
    with CaptureQueriesContext(connections["default"]) as primary, \
            CaptureQueriesContext(connections[REPLICA]) as on_replica:
        response = client.post(reverse("admin:contacts_segment_preview"), {"definition": definition})
    assert response.status_code == 200
    assert response.json()["count"] == 1
    assert CONTACTS_TABLE in tables_read(on_replica)
    assert CONTACTS_TABLE not in tables_read(primary)


def test_the_operations_history_reads_from_the_replica(replica: PostgresStandby, role_users: dict[str, Any]) -> None:
    client = Client()
    client.force_login(role_users["ops"])
    replica.wait_for_primary()
    served = get(client, reverse("operations"))
    assert served.status == 200
    assert "campaigns_message" in served.on_replica  # the last hour of sends, the days' rates
    assert "campaigns_message" not in served.on_primary
    assert "core_switch" in served.on_primary  # what is true now stays on the primary
    assert "core_switch" not in served.on_replica


def test_workflow_email_reports_read_from_the_replica(replica: PostgresStandby, role_users: dict[str, Any],
                                                      sender: Any, sink: Any) -> None:
    # given a workflow email sent (its Message on the primary) and replayed by the standby
    step_utm_cache_clear()
    sent_message(sender)
    production = version(Workflow.objects.get(key="onboard"), "production")
    replica.wait_for_primary()
    marketer = Client()
    marketer.force_login(role_users["marketer"])
    # when a marketer opens the email's report and its CSV
    args = [production.workflow_id, production.pk, "hello"]
    for url in (reverse("admin:automation_workflow_email_report", args=args),
                reverse("admin:automation_workflow_email_report_csv", args=args)):
        served = get(marketer, url)
        # then the outbox is read on the replica only
        assert served.status == 200, url
        assert "campaigns_message" in served.on_replica, url
        assert "campaigns_message" not in served.on_primary, url


def test_broadcast_reports_read_from_the_replica(replica: PostgresStandby, role_users: dict[str, Any],
                                                 sender: Any) -> None:
    broadcast = make_broadcast(sender, make_contacts(2))
    replica.wait_for_primary()
    marketer = Client()
    marketer.force_login(role_users["marketer"])
    for url in (f"/admin/broadcasts/broadcast/{broadcast.pk}/report/",
                f"/admin/broadcasts/broadcast/{broadcast.pk}/report/csv/"):
        served = get(marketer, url)
        assert served.status == 200, url
        assert "campaigns_message" in served.on_replica, url
        assert "campaigns_message" not in served.on_primary, url


def test_a_request_that_wrote_reads_its_own_write_from_the_primary(
        replica: PostgresStandby, role_users: dict[str, Any]) -> None:
    # given a standby that replays nothing more
    request = RequestFactory().get(reverse("scoring:lead_list"))
    request.user = role_users["sales"]
    replica.wait_for_primary()
    replica.pause_replay()

    def view_that_writes_first(req: Any) -> Any:
        Contact.objects.create(email="new@example.com")
        return lead_list(req)

    # when a request writes a contact, then shows the (replica-marked) lead list
    response: Any = ReplicaScopeMiddleware(view_that_writes_first)(request)
    # then it sees its own write, which the standby does not have
    assert "new@example.com" in response.content.decode()
    assert replica.sql(f"SELECT count(*) FROM {CONTACTS_TABLE} WHERE email = 'new@example.com'") == 0  # noqa: S608
    # and a request that did not write reads the standby (which is why the write had to be noticed)
    again: Any = ReplicaScopeMiddleware(lead_list)(request)
    assert "new@example.com" not in again.content.decode()


def test_a_client_that_wrote_reads_its_change_on_the_next_pages_until_the_replica_has_it(
        replica: PostgresStandby, role_users: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # given a lead with no owner, replayed by a standby that then replays nothing more: behind, but
    # within DATABASE_REPLICA_MAX_LAG, so still in use
    lead = Contact.objects.create(email="ada@example.com")
    replica.wait_for_primary()
    replica.pause_replay()
    marketer = Client()
    marketer.force_login(role_users["marketer"])
    # when a marketer gives the lead to Sales ("Assign an owner"), follows the redirect, opens the lead
    assigned = marketer.post(reverse("admin:contacts_contact_changelist"), {
        "action": "assign_owner", "_selected_action": [lead.pk], "post": "yes", "owner": role_users["sales"].pk,
    }, follow=True)
    assert assigned.status_code == 200
    assert "1 contact(s) now owned by sales." in assigned.content.decode()
    assert replica.sql(f"SELECT owner_id FROM {CONTACTS_TABLE} WHERE id = {lead.pk}") is None  # noqa: S608
    served = get(marketer, reverse("scoring:lead_detail", args=[lead.pk]))
    # then the page shows the new owner: this client's marked reads went to the primary
    assert served.status == 200
    assert '<td id="lead-owner">sales</td>' in served.text
    assert CONTACTS_TABLE in served.on_primary
    assert CONTACTS_TABLE not in served.on_replica
    # and so does a later page of the same client that wrote nothing itself
    assert CONTACTS_TABLE not in get(marketer, reverse("scoring:lead_list")).on_replica
    # and once the window is over (the standby lagging at most the max lag has it by then), the
    # replica serves this client again: still paused here, so it shows the old value
    later = db_router._now() + db_router.read_own_writes_seconds()
    monkeypatch.setattr(db_router, "_now", lambda: later)
    served = get(marketer, reverse("scoring:lead_detail", args=[lead.pk]))
    assert CONTACTS_TABLE in served.on_replica
    assert CONTACTS_TABLE not in served.on_primary
    assert '<td id="lead-owner">—</td>' in served.text


def test_only_signed_in_clients_that_wrote_get_the_marker_and_a_forged_one_is_ignored(
        replica: PostgresStandby, role_users: dict[str, Any]) -> None:
    replica.wait_for_primary()

    def public_view_that_writes(req: Any) -> Any:  # a tracking hit or an event API call
        Contact.objects.create(email=f"visitor{Contact.objects.count()}@example.com")
        return HttpResponse(status=204)

    # an anonymous request that writes: no cookie (nobody reads its writes back)
    request = RequestFactory().post("/e/example/")
    request.user = AnonymousUser()
    assert db_router.WROTE_COOKIE not in ReplicaScopeMiddleware(public_view_that_writes)(request).cookies
    # a signed-in one: the cookie, HttpOnly, and gone from the browser after the window
    request.user = role_users["sales"]
    marker = ReplicaScopeMiddleware(public_view_that_writes)(request).cookies[db_router.WROTE_COOKIE]
    assert marker["httponly"]
    assert marker["max-age"] == math.ceil(db_router.read_own_writes_seconds())
    # a marker the client wrote itself (unsigned, or signed for something else) changes nothing
    replica.wait_for_primary()
    client = sales_client(role_users)
    for forged in (str(db_router._now()), signing.get_cookie_signer(salt="other").sign(str(db_router._now()))):
        client.cookies[db_router.WROTE_COOKIE] = forged
        assert CONTACTS_TABLE in get(client, reverse("scoring:lead_list")).on_replica


def test_raw_sql_writes_and_open_transactions_keep_reads_on_the_primary(replica: PostgresStandby) -> None:
    Contact.objects.create(email="ada@example.com", first_name="Ada")
    replica.wait_for_primary()
    replica.pause_replay()

    @replica_reads
    def job_writing_raw_sql() -> bool:
        with connections["default"].cursor() as cursor:  # not through the ORM: the execute wrapper sees it
            cursor.execute(f"UPDATE {CONTACTS_TABLE} SET first_name = 'Raw' WHERE email = 'ada@example.com'")  # noqa: S608
        return Contact.objects.filter(first_name="Raw").exists()

    assert job_writing_raw_sql()
    with transaction.atomic(), replica_ok():  # a read inside a transaction belongs with its writes
        assert Contact.objects.filter(first_name="Raw").exists()
    with replica_ok():  # the same read, marked and outside both: the standby, which has not replayed it
        assert not Contact.objects.filter(first_name="Raw").exists()


def test_a_lagging_replica_is_not_used(replica: PostgresStandby, role_users: dict[str, Any], settings: Any,
                                       caplog: pytest.LogCaptureFixture) -> None:
    client = sales_client(role_users)
    replica.wait_for_primary()
    replica.pause_replay()
    # given a contact the standby has received but not replayed, and no lag allowed
    Contact.objects.create(email="late@example.com")
    settings.DATABASE_REPLICA_MAX_LAG = 0
    forget_health()
    # when Sales opens the lead list (twice)
    with caplog.at_level(logging.WARNING, logger="config.db_router"):
        served = get(client, reverse("scoring:lead_list"))
        assert get(client, reverse("scoring:lead_list")).status == 200
    # then the primary served it, with the new contact; the replica only answered the lag check
    assert served.status == 200
    assert "late@example.com" in served.text
    assert CONTACTS_TABLE in served.on_primary
    assert CONTACTS_TABLE not in served.on_replica
    assert "pg_last_xact_replay_timestamp" in served.on_replica
    assert sum("read replica lagging" in r.getMessage() for r in caplog.records) == 1  # once, not per request
    assert "leadflow_db_replica_in_use 0.0" in scrape(client, settings)
    # and once it has caught up it serves reads again
    replica.resume_replay()
    replica.wait_for_primary()
    settings.DATABASE_REPLICA_MAX_LAG = 3600
    forget_health()
    assert CONTACTS_TABLE in get(client, reverse("scoring:lead_list")).on_replica
    assert "leadflow_db_replica_in_use 1.0" in scrape(client, settings)


def scrape(client: Client, settings: Any) -> str:
    settings.METRICS_TOKEN = "replica-test-token"
    return client.get("/metrics", headers={"Authorization": "Bearer replica-test-token"}).content.decode()


@pytest.mark.parametrize("check_again", [True, False], ids=["found-by-the-check", "failing-mid-request"])
def test_a_replica_stopped_mid_test_falls_back_to_the_primary(
        replica: PostgresStandby, role_users: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, check_again: bool) -> None:
    # given the lead list served from the standby (its connection open)
    Contact.objects.create(email="ada@example.com")
    replica.wait_for_primary()
    client = sales_client(role_users)
    assert CONTACTS_TABLE in get(client, reverse("scoring:lead_list")).on_replica
    if not check_again:  # the router still trusts its last check: the query itself meets the dead replica
        monkeypatch.setattr(db_router, "HEALTH_TTL_SECONDS", 3600.0)
    # when the standby dies
    replica.stop(mode="immediate")
    if check_again:
        forget_health()
    # then each marked read still answers, from the primary, and the outage is logged once
    with caplog.at_level(logging.WARNING, logger="config.db_router"):
        for url in (reverse("scoring:lead_list"), reverse("scoring:lead_export")):
            served = get(client, url, watch_replica=False)
            assert served.status == 200, url
            assert "ada@example.com" in served.text, url
            assert CONTACTS_TABLE in served.on_primary, url
        marketer = Client()
        marketer.force_login(role_users["marketer"])
        preview = marketer.post(reverse("admin:contacts_segment_preview"), {"definition": '{"all": []}'})
        assert preview.status_code == 200
        assert preview.json()["count"] == 1  # counted, not "the database could not run this filter"
    downs = [r for r in caplog.records if "read replica down" in r.getMessage()]
    assert len(downs) == 1, [r.getMessage() for r in caplog.records]


def test_a_segment_preview_falls_back_when_the_replica_fails_mid_request(
        replica: PostgresStandby, role_users: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    Contact.objects.create(email="ada@example.com")
    replica.wait_for_primary()
    marketer = Client()
    marketer.force_login(role_users["marketer"])
    definition = '{"all": []}'
    with CaptureQueriesContext(connections[REPLICA]) as on_replica:
        assert marketer.post(reverse("admin:contacts_segment_preview"), {"definition": definition}).json()["count"] == 1
    assert CONTACTS_TABLE in tables_read(on_replica)
    monkeypatch.setattr(db_router, "HEALTH_TTL_SECONDS", 3600.0)
    replica.stop(mode="immediate")
    response = marketer.post(reverse("admin:contacts_segment_preview"), {"definition": definition})
    assert response.status_code == 200
    assert response.json() == {"count": 1, "sample": [{"email": "ada@example.com", "name": "", "score": 0}],
                               "errors": []}


def test_a_replica_that_stays_down_opens_an_incident_until_it_is_back(replica: PostgresStandby) -> None:
    # given the alert check while the replica serves: nothing to report about it
    replica.wait_for_primary()
    alerts_check()
    assert not Incident.objects.filter(key="db_replica").exists()
    # when the standby dies
    replica.stop(mode="immediate")
    forget_health()
    alerts_check()
    # then an incident says so (reads meanwhile go to the primary), once
    incident = Incident.objects.get(key="db_replica", resolved_at__isnull=True)
    assert incident.summary.startswith("read replica down: read-only pages read the primary")
    alerts_check()
    assert Incident.objects.filter(key="db_replica").count() == 1
    # and it resolves itself once the standby answers again
    replica.resume()
    replica.wait_for_primary()
    forget_health()
    alerts_check()
    assert Incident.objects.get(key="db_replica").resolved_at is not None
