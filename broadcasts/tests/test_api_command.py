"""POST /api/v1/campaigns/<key>/send (campaigns:send scope) and `manage.py broadcast_send <key>`."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from broadcasts.models import Broadcast, BroadcastStatus, ScheduleKind
from broadcasts.tests.conftest import approve, make_broadcast, make_contacts
from contacts.apikeys import api_key_create
from contacts.models import ApiScope

pytestmark = pytest.mark.django_db


def post(raw: str, key: str) -> tuple[int, dict]:
    response = Client().post(f"/api/v1/campaigns/{key}/send", HTTP_AUTHORIZATION=f"Bearer {raw}")
    return response.status_code, response.json()


def test_the_api_sends_an_approved_broadcast_with_the_scope_only(staged_sender, tester):
    approve(make_broadcast(staged_sender, make_contacts(4)))
    _, without = api_key_create(name="events only")
    status, body = post(without, "news")
    assert status == 403
    assert "campaigns:send" in body["error"]["message"]
    _, raw = api_key_create(name="ci", scopes=[ApiScope.CAMPAIGNS_SEND])
    assert post(raw, "nope") == (404, {"error": {"code": "not_found", "message": "no broadcast with key 'nope'"}})
    status, body = post(raw, "news")
    assert status == 202
    assert body["status"] == "sending"
    assert body["recipients"] == 4
    # sending it again is a conflict, not a second send
    status, body = post(raw, "news")
    assert status == 409
    assert "already sending" in body["error"]["message"]


def test_the_api_refuses_a_draft_and_a_schedule_in_the_past(staged_sender, tester):
    _, raw = api_key_create(name="ci", scopes=[ApiScope.CAMPAIGNS_SEND])
    make_broadcast(staged_sender, make_contacts(2), key="draft")
    status, body = post(raw, "draft")
    assert status == 409
    assert "it is a draft" in body["error"]["message"]
    past = approve(make_broadcast(staged_sender, make_contacts(2, "p"), key="past", schedule=ScheduleKind.AT,
                                  send_at=timezone.now() + dt.timedelta(minutes=5)))
    Broadcast.objects.filter(pk=past.pk).update(send_at=timezone.now() - dt.timedelta(minutes=5))
    status, body = post(raw, "past")
    assert status == 422
    assert "is in the past" in body["error"]["message"]
    assert Broadcast.objects.get(pk=past.pk).status == BroadcastStatus.APPROVED


def test_the_command_sends_or_schedules_and_explains_refusals(staged_sender, tester):
    approve(make_broadcast(staged_sender, make_contacts(3), key="later", schedule=ScheduleKind.AT,
                           send_at=timezone.now() + dt.timedelta(days=1)))
    out = StringIO()
    call_command("broadcast_send", "later", stdout=out)
    assert out.getvalue().startswith("later: scheduled at ")
    with pytest.raises(CommandError, match="no broadcast with key 'missing' \\(recent: later\\)"):
        call_command("broadcast_send", "missing")
    with pytest.raises(CommandError, match="later: .*it is already scheduled"):
        call_command("broadcast_send", "later")
