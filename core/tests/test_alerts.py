"""Alert rules: an incident is notified once (email and webhook), and resolved when it clears."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core import mail
from django.test import override_settings
from django.utils import timezone

from campaigns.models import Message, MessageStatus
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact, make_template
from core.alerts import alerts_check
from core.models import Incident
from core.queues import get_connection
from core.services import switch_set
from core.webhooks import outgoing_secret, verify

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback HTTP server standing in for the chat/pager webhook; keeps what it is sent."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            signed = verify(outgoing_secret("alerts"), self.headers.get("X-Leadflow-Timestamp", ""),
                            self.headers.get("X-Leadflow-Signature", ""), raw)
            received.append({**json.loads(raw), "_signed": signed})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_no_sends_while_messages_wait_is_one_incident_notified_once_then_resolved(sender, webhook):  # noqa: ANN001
    url, received = webhook
    template = make_template()
    messages_queue(template=template, items=[QueueItem(make_contact("a@example.com").pk, "k")])
    Message.objects.update(created_at=timezone.now() - dt.timedelta(minutes=30))
    with override_settings(ALERT_EMAILS=["ops@leadflow.test"], ALERT_WEBHOOK_URL=url, ALERT_NO_SENDS_MINUTES=10,
                           ALERT_QUEUE_AGE_SECONDS=10_000):
        first = alerts_check()
        second = alerts_check()
        # then: one open incident per condition (nothing sent; the message is overdue), one email
        # and one webhook call each, however many checks run
        keys = {"no_sends", "messages_stuck"}
        assert (first["opened"], second["opened"]) == (2, 0)
        assert set(Incident.objects.filter(resolved_at__isnull=True).values_list("key", flat=True)) == keys
        incident = Incident.objects.get(key="no_sends")
        assert incident.notify_error == ""
        assert f"[Leadflow alert] {incident.summary}" in [m.subject for m in mail.outbox]
        assert len(mail.outbox) == 2
        assert sorted(r["key"] for r in received) == sorted(keys)
        assert all(r["_signed"] for r in received)  # signed with the alerts' own secret
        # when the message goes out, both resolve
        Message.objects.update(status=MessageStatus.SENT, sent_at=timezone.now())
        assert alerts_check()["resolved"] == 2
        incident.refresh_from_db()
        assert incident.resolved_at is not None


def test_a_paused_sending_switch_is_not_an_incident(sender, role_users):  # noqa: ANN001
    messages_queue(template=make_template(), items=[QueueItem(make_contact("a@example.com").pk, "k")])
    Message.objects.update(created_at=timezone.now() - dt.timedelta(minutes=30))
    switch_set(name="sending", paused=True, actor=role_users["ops"])
    assert not Incident.objects.exists()
    alerts_check()
    assert not Incident.objects.filter(key="no_sends").exists()


@override_settings(ALERT_MIN_ATTEMPTS=5, ALERT_FAILURE_RATE=0.2)
def test_a_delivery_failure_rate_over_the_threshold_fires(sender):  # noqa: ANN001
    template = make_template()
    messages_queue(template=template,
                   items=[QueueItem(make_contact(f"f{i}@example.com").pk, f"k{i}") for i in range(10)])
    now = timezone.now()
    ids = list(Message.objects.values_list("id", flat=True))
    Message.objects.filter(pk__in=ids[:3]).update(status=MessageStatus.FAILED, updated_at=now)
    Message.objects.filter(pk__in=ids[3:]).update(status=MessageStatus.SENT, sent_at=now, updated_at=now)
    alerts_check()
    assert Incident.objects.get(key="delivery_failure_rate").detail == {"failed": 3, "sent": 7}


def test_a_failing_webhook_is_recorded_on_the_incident(sender):  # noqa: ANN001
    messages_queue(template=make_template(), items=[QueueItem(make_contact("a@example.com").pk, "k")])
    Message.objects.update(status=MessageStatus.SENDING, claimed_at=timezone.now() - dt.timedelta(hours=1))
    with override_settings(ALERT_WEBHOOK_URL="http://127.0.0.1:9/nothing-listens-here"):
        alerts_check()
    incident = Incident.objects.get(key="messages_stuck")
    assert incident.notify_error.startswith("webhook:")
