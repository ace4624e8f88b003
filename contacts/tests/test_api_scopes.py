"""API key scopes: each /api/v1/ endpoint needs its scope; a key without it gets 403 naming the
scope, and nothing happens. New keys get events:write only; keys from before scopes keep all four."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from campaigns.models import Suppression
from contacts.apikeys import api_key_authenticate, api_key_create
from contacts.models import ApiKey, ApiScope, ConsentStatus, Contact, Event
from core.models import AuditEntry
from core.queues import get_connection

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()


@dataclass(frozen=True)
class Endpoint:
    scope: str
    method: str
    path: str
    body: Any
    allowed_status: int

    def call(self, raw: str) -> Any:
        headers = {"Authorization": f"Bearer {raw}"}
        if self.method == "GET":
            return Client().get(f"/api/v1/{self.path}", headers=headers)
        return Client().post(f"/api/v1/{self.path}", json.dumps(self.body), content_type="application/json",
                             headers=headers)


ENDPOINTS = [
    Endpoint("events:write", "POST", "events",
             {"events": [{"email": "ann@example.com", "type": "page.viewed", "idempotency_key": "e1"}]}, 202),
    Endpoint("contacts:write", "POST", "contacts", {"contacts": [{"email": "ann@example.com", "company": "Hax"}]},
             200),
    Endpoint("contacts:read", "GET", "contacts/ann@example.com", None, 200),
    Endpoint("bounces:write", "POST", "bounces", {"bounces": [{"email": "ann@example.com", "type": "complaint"}]},
             202),
    # Past the scope check the key is looked up: an unknown broadcast is a 404, nothing sent.
    Endpoint("campaigns:send", "POST", "campaigns/no-such-broadcast/send", {}, 404),
]


@pytest.fixture
def ann() -> Contact:
    return Contact.objects.create(email="ann@example.com", company="Acme", consent_status=ConsentStatus.GRANTED)


def nothing_happened() -> bool:
    ann = Contact.objects.get(email="ann@example.com")
    return (ann.company, ann.consent_status) == ("Acme", ConsentStatus.GRANTED) and not (
        Event.objects.exists() or Suppression.objects.exists())


def test_every_endpoint_has_a_scope_and_every_scope_an_endpoint() -> None:
    assert sorted(e.scope for e in ENDPOINTS) == sorted(ApiScope.values)


@pytest.mark.parametrize("key_scope", ApiScope.values)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
def test_an_endpoint_answers_only_a_key_holding_its_scope(ann: Contact, endpoint: Endpoint, key_scope: str) -> None:
    raw = api_key_create(name="integration", scopes=[key_scope])[1]

    response = endpoint.call(raw)

    if key_scope == endpoint.scope:
        assert response.status_code == endpoint.allowed_status, response.content
        return
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "insufficient_scope"
    assert endpoint.scope in error["message"]
    assert key_scope in error["message"]  # what the key has, to tell a wrong key from a narrow one
    assert f'scope="{endpoint.scope}"' in response["WWW-Authenticate"]
    assert nothing_happened()


def test_an_events_only_key_cannot_file_a_complaint_that_suppresses_anyone(ann: Contact) -> None:
    raw = api_key_create(name="website")[1]  # the default: events:write
    own = Client().post("/api/v1/bounces", json.dumps({"bounces": [{"email": ann.email, "type": "complaint"}]}),
                        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}")
    ses = {"notificationType": "Complaint", "mail": {"messageId": "x"},
           "complaint": {"complainedRecipients": [{"emailAddress": ann.email}], "complaintFeedbackType": "abuse"}}
    basic = base64.b64encode(f"leadflow:{raw}".encode()).decode()
    sns = Client().post("/api/v1/bounces", json.dumps({"Type": "Notification", "Message": json.dumps(ses)}),
                        content_type="text/plain", HTTP_AUTHORIZATION=f"Basic {basic}")
    assert (own.status_code, sns.status_code) == (403, 403)
    assert nothing_happened()


def test_a_key_with_several_scopes_uses_each(ann: Contact) -> None:
    raw = api_key_create(name="crm", scopes=["contacts:read", "contacts:write"])[1]
    by_scope = {e.scope: e for e in ENDPOINTS}
    assert by_scope["contacts:write"].call(raw).status_code == 200
    assert by_scope["contacts:read"].call(raw).json()["company"] == "Hax"
    assert by_scope["events:write"].call(raw).status_code == 403


# --- Creating and changing keys ---------------------------------------------------------------------


def test_new_keys_get_events_write_only_and_unknown_scopes_are_refused() -> None:
    assert api_key_create(name="website")[0].scopes == ["events:write"]
    with pytest.raises(ValidationError, match="unknown scope.*admin"):
        api_key_create(name="bad", scopes=["admin"])
    with pytest.raises(ValidationError, match="blank"):
        api_key_create(name="none", scopes=[])


def test_create_api_key_takes_repeated_scopes_and_defaults_to_events() -> None:
    out, err = StringIO(), StringIO()
    call_command("create_api_key", "crm", "--scope", "events:write", "--scope", "contacts:read", stdout=out,
                 stderr=err)
    key = api_key_authenticate(out.getvalue().strip())
    assert key is not None
    assert key.scopes == ["events:write", "contacts:read"]
    assert "events:write contacts:read" in err.getvalue()

    out = StringIO()
    call_command("create_api_key", "site", stdout=out, stderr=StringIO())
    site = api_key_authenticate(out.getvalue().strip())
    assert site is not None
    assert site.scopes == ["events:write"]

    with pytest.raises(CommandError, match="invalid choice: 'admin'"):
        call_command("create_api_key", "x", "--scope", "admin", stdout=StringIO(), stderr=StringIO())


@pytest.fixture
def ops(role_users: dict[str, User]) -> Client:
    client = Client()
    client.force_login(role_users["ops"])
    return client


def test_ops_choose_scopes_in_the_admin_see_them_listed_and_change_them(ops: Client, role_users: dict[str, User]
                                                                         ) -> None:
    form = ops.get("/admin/contacts/apikey/add/").context["adminform"].form
    assert form["scopes"].value() == ["events:write"]  # ticked by default, the others offered
    assert [value for value, _ in form.fields["scopes"].choices] == ApiScope.values
    response = ops.post("/admin/contacts/apikey/add/", {
        "name": "ses", "rate_limit_per_minute": "600", "create_unknown_contacts": "on", "scopes": ["bounces:write"]},
        follow=True)
    assert response.status_code == 200
    key = ApiKey.objects.get(name="ses")
    assert key.scopes == ["bounces:write"]
    assert AuditEntry.objects.get(action="api_key.created").data["scopes"] == ["bounces:write"]

    listing = ops.get("/admin/contacts/apikey/").content.decode()
    assert "bounces:write" in listing

    response = ops.post(f"/admin/contacts/apikey/{key.pk}/change/", {
        "rate_limit_per_minute": "600", "create_unknown_contacts": "on", "scopes": ["bounces:write", "events:write"]})
    assert response.status_code == 302, response.content[:2000]
    key.refresh_from_db()
    assert key.scopes == ["events:write", "bounces:write"]
    change = AuditEntry.objects.get(action="api_key.changed")
    assert change.actor == role_users["ops"]
    assert change.data == {"scopes": {"from": ["bounces:write"], "to": ["events:write", "bounces:write"]}}


def test_a_key_needs_at_least_one_scope_in_the_admin(ops: Client) -> None:
    response = ops.post("/admin/contacts/apikey/add/", {"name": "empty", "rate_limit_per_minute": "600"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["scopes"] == ["This field is required."]
    assert not ApiKey.objects.exists()


# --- Upgrading -------------------------------------------------------------------------------------


def migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def back_to_latest() -> Iterator[None]:
    try:
        yield
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_keys_from_before_scopes_keep_full_access_and_new_ones_do_not(back_to_latest: None) -> None:
    old_apps = migrate([("contacts", "0007_contact_score_table")])
    old_apps.get_model("contacts", "ApiKey").objects.create(name="legacy", prefix="abc", key_hash="0" * 64)

    migrate([("contacts", "0008_apikey_scopes")])

    # Full access as it was when scopes came in: the four scopes of 0008. Scopes added later (a
    # broadcast send) are new powers an old key must be given explicitly, never inherited.
    assert sorted(ApiKey.objects.get(name="legacy").scopes) == sorted(
        ["events:write", "contacts:write", "contacts:read", "bounces:write"])
    assert api_key_create(name="fresh")[0].scopes == ["events:write"]
