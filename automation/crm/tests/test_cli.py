"""manage.py crm status | resync NAME | retry-failed NAME (issue 16, item 7)."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from automation.crm.models import CrmSyncItem, SyncStatus
from automation.crm.services import crm_contacts_changed
from core.models import AuditEntry


def run(*args: str) -> str:
    out = StringIO()
    call_command("crm", *args, stdout=out)
    return out.getvalue()


def test_status_resync_and_retry_failed(make_connection, make_contacts):
    conn = make_connection(name="HubSpot prod")
    contacts = make_contacts(3)
    crm_contacts_changed(contact_ids=[contacts[0].pk], reason="contact")
    CrmSyncItem.objects.filter(connection=conn).update(status=SyncStatus.FAILED,
                                                       last_error="VALIDATION_ERROR: INVALID_OPTION")
    # status: one line per connection with its queue, and the latest error
    text = run("status")
    assert "HubSpot prod [hubspot, active]: 0 pending, 0 sending, 0 synced, 1 failed" in text
    assert "latest error: VALIDATION_ERROR: INVALID_OPTION" in text
    # retry-failed: the failed contact is pending again, audited as the CLI
    assert "1 failed contact(s) queued again" in run("retry-failed", "HubSpot prod")
    assert CrmSyncItem.objects.get(connection=conn).status == SyncStatus.PENDING
    # resync: every contact is queued
    assert "3 contact(s) queued for a full resync" in run("resync", "HubSpot prod")
    assert CrmSyncItem.objects.filter(connection=conn, status=SyncStatus.PENDING).count() == 3
    assert AuditEntry.objects.filter(action="crm.resync_all", actor_label__startswith="cli").exists()
    # a connection paused for the CRM's daily limit says so
    conn.paused_until = timezone.now() + dt.timedelta(hours=3)
    conn.save()
    assert "paused until" in run("status")


def test_an_unknown_name_is_a_clear_error(make_connection):
    make_connection(name="HubSpot prod")
    with pytest.raises(CommandError, match="no CRM connection named 'nope' \\(connections: HubSpot prod\\)"):
        run("resync", "nope")
