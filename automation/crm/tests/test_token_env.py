"""A connection's "token env" names only a CRM token variable (issue 14, item 1): any other name
(SECRET_KEY, DATABASE_URL, EMAIL_URL, cloud credentials) is refused at save, in the admin, and at
use time, so its value is never sent to the connection's URL as a Bearer token."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from automation.crm.models import CrmConnection, CrmSyncItem, SyncStatus
from automation.crm.services import crm_contacts_changed
from automation.crm.vault import SecretUnavailable, connection_token
from core.testing.receiver import Receiver

from .conftest import drain, env_for

SECRET = "the-real-secret-key-value"  # noqa: S105  stands in for SECRET_KEY's value


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("DATABASE_URL", "postgres://leadflow:pw@db/leadflow")


@pytest.mark.parametrize("name", ["SECRET_KEY", "DATABASE_URL", "EMAIL_URL", "AWS_SECRET_ACCESS_KEY",
                                  "LEADFLOW_CRM_", "leadflow crm token"])
def test_a_token_env_outside_the_rule_is_refused_at_save(make_connection, name):
    with pytest.raises(ValidationError) as exc:
        make_connection(token_env=name)
    (message,) = exc.value.message_dict["token_env"]
    assert name in message or repr(name) in message
    assert "LEADFLOW_CRM_" in message


def test_a_crm_token_variable_is_accepted_and_sent(fake_hubspot, make_connection, make_contacts, clock,
                                                   monkeypatch):
    monkeypatch.setenv("LEADFLOW_CRM_HUBSPOT_TOKEN", "pat-from-env")
    fake = fake_hubspot(token="pat-from-env")
    conn = make_connection(fake, token_env="LEADFLOW_CRM_HUBSPOT_TOKEN")
    (contact,) = make_contacts(1)
    crm_contacts_changed(contact_ids=[contact.pk], reason="contact")
    drain(conn, env_for(clock), clock)
    assert CrmSyncItem.objects.get(connection=conn).status == SyncStatus.SYNCED


def test_a_name_listed_in_the_setting_is_accepted(make_connection, settings, monkeypatch):
    settings.CRM_TOKEN_ENV_ALLOWED = ["HUBSPOT_PRIVATE_APP_TOKEN"]
    monkeypatch.setenv("HUBSPOT_PRIVATE_APP_TOKEN", "pat-listed")
    conn = make_connection(token_env="HUBSPOT_PRIVATE_APP_TOKEN")
    assert connection_token(token_env=conn.token_env, token_encrypted="") == "pat-listed"


def test_ops_cannot_save_secret_key_as_token_env_in_the_admin(client, role_users, secret_env):
    client.force_login(role_users["ops"])
    response = client.post(reverse("admin:crm_crmconnection_add"), {
        "name": "exfil", "kind": "webhook", "base_url": "https://crm.example.com/hook", "token_env": "SECRET_KEY",
        "token": "", "signing_secret": "", "field_mapping": json.dumps({"first_name": "firstname"}),
        "score_step": 10, "rate_limit": "100/10s", "batch_size": 100, "timeout_seconds": 30, "is_active": "on",
    })
    assert response.status_code == 200
    assert b"SECRET_KEY may not hold a CRM token" in response.content
    assert not CrmConnection.objects.filter(name="exfil").exists()


def test_use_time_refuses_a_variable_outside_the_rule(secret_env):
    with pytest.raises(SecretUnavailable, match="SECRET_KEY may not hold a CRM token"):
        connection_token(token_env="SECRET_KEY", token_encrypted="")


def test_a_row_saved_before_the_rule_never_sends_the_variable(make_connection, make_contacts, clock, secret_env):
    # given a webhook connection whose token env was set to SECRET_KEY without validation
    # (saved before the fix, or by raw SQL)
    with Receiver() as crm:
        conn = make_connection(kind=CrmConnection.Kind.WEBHOOK, base_url=crm.url + "/hook")
        CrmConnection.objects.filter(pk=conn.pk).update(token_env="SECRET_KEY")
        (contact,) = make_contacts(1)
        # when its contacts sync
        crm_contacts_changed(contact_ids=[contact.pk], reason="contact")
        drain(conn, env_for(clock), clock)
    # then nothing was sent, and the item failed naming the rule
    assert crm.hits == []
    item = CrmSyncItem.objects.get(connection=conn)
    assert item.status == SyncStatus.FAILED
    assert "SECRET_KEY may not hold a CRM token" in item.last_error
    assert SECRET not in item.last_error
