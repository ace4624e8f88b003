"""Ops sees failures and stalls: /readyz, /metrics, the operations page, and the kill switches."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings
from rq import Queue
from rq.worker import Worker

from campaigns.delivery import delivery_run
from campaigns.models import Message, MessageStatus
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact, make_template
from core.models import AuditEntry, Switch
from core.queues import get_connection, get_queue
from core.services import switch_set

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()


def test_readyz_says_what_is_missing_and_turns_ready_when_a_worker_registers(client: Client):
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "database": "ok", "redis": "ok",
                               "workers": "error: no worker registered"}
    worker = Worker([get_queue("default")], connection=get_connection())
    worker.register_birth()
    try:
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["ready"] is True
    finally:
        worker.register_death()


def test_metrics_are_off_without_a_token_and_refuse_a_wrong_one(client: Client):
    assert client.get("/metrics").status_code == 404
    with override_settings(METRICS_TOKEN="s3cret-token"):
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401


@override_settings(METRICS_TOKEN="s3cret-token")
def test_metrics_report_queues_and_the_outbox_by_status(client: Client, sender):  # noqa: ANN001
    template = make_template()
    messages_queue(template=template,
                   items=[QueueItem(make_contact(f"m{i}@example.com").pk, f"k{i}") for i in range(3)])
    Message.objects.filter(pk=Message.objects.first().pk).update(status=MessageStatus.FAILED)  # type: ignore[union-attr]
    Queue("crm", connection=get_connection()).enqueue("core.tasks.heartbeat")  # plain RQ: no wait for COMMIT
    response = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert response.status_code == 200
    body = response.content.decode()
    assert 'leadflow_messages{status="queued"} 2.0' in body
    assert 'leadflow_messages{status="failed"} 1.0' in body
    assert 'leadflow_queue_depth{queue="crm"} 1.0' in body
    assert 'leadflow_switch_paused{name="sending"} 0.0' in body


@pytest.mark.parametrize(("role", "status"), [("ops", 200), ("admin", 200), ("marketer", 403), ("sales", 403)])
def test_the_operations_page_is_for_ops(client: Client, role_users, role: str, status: int):  # noqa: ANN001
    client.force_login(role_users[role])
    assert client.get("/admin/operations/").status_code == status


def test_the_operations_page_shows_stuck_and_failed_work_with_links(client: Client, role_users, sender):  # noqa: ANN001
    template = make_template()
    messages_queue(template=template, items=[QueueItem(make_contact("x@example.com").pk, "k")])
    Message.objects.update(status=MessageStatus.SENDING, claimed_at="2020-01-01T00:00:00Z")
    client.force_login(role_users["ops"])
    page = client.get("/admin/operations/").content.decode()
    assert "1 stuck past their deadline" in page
    assert "/admin/campaigns/message/?status__exact=sending" in page
    assert "No heartbeat yet" in page


def test_the_sending_switch_holds_messages_without_losing_them_and_is_audited(  # noqa: ANN201
        client: Client, role_users, sender, sink):  # noqa: ANN001
    template = make_template()
    messages_queue(template=template, items=[QueueItem(make_contact("held@example.com").pk, "k")])
    client.force_login(role_users["marketer"])
    assert client.post("/admin/operations/switch/sending", {"paused": "1"}).status_code == 403
    client.force_login(role_users["ops"])
    client.post("/admin/operations/switch/sending", {"paused": "1", "reason": "provider incident"})
    assert Switch.objects.get(name="sending").paused
    assert AuditEntry.objects.filter(action="switch.paused", data__reason="provider incident").exists()
    # while paused, a delivery job holds everything
    delivery_run(sender_id=sender.pk, max_seconds=5)
    assert Message.objects.get().status == MessageStatus.QUEUED
    assert sink.received == []
    # resumed: the same message goes out once
    switch_set(name="sending", paused=False, actor=role_users["ops"])
    delivery_run(sender_id=sender.pk, max_seconds=5)
    assert Message.objects.get().status == MessageStatus.SENT
    assert len(sink.received) == 1
    assert AuditEntry.objects.filter(action="switch.resumed").count() == 1
