"""Workflow `webhook` and `notify_sales` calls go through core.outbound (issue 14, item 3): an
internal address is refused on the address connected to, a 307 is not followed (it would re-send
the signed body to another internal port), and a Marketer sees the status of an error answer,
never its body."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from automation import engine
from automation.definition import validate_workflow
from automation.models import DeliveryStatus, WebhookDelivery
from automation.tests.conftest import advance, deploy, emit, make_contact, wf_file
from core.testing.receiver import Receiver

INTERNAL = b"root:x:0:0:root:/root:/bin/bash internal-only answer"

pytestmark = pytest.mark.django_db


def run_webhook_step(step: dict[str, Any], *, settings: Any = None, allowed_when_sent: list[str] | None = None,
                     ) -> WebhookDelivery:
    deploy(wf_file(steps=[step]))
    emit(make_contact("hook@example.com"), "signed_up")
    advance()
    row = WebhookDelivery.objects.get(channel=WebhookDelivery.Channel.WEBHOOK)
    if allowed_when_sent is not None:
        settings.OUTBOUND_ALLOWED_NETWORKS = allowed_when_sent
    engine.webhook_deliver(delivery_id=row.pk)
    return WebhookDelivery.objects.get(pk=row.pk)


def test_a_webhook_to_loopback_is_refused_at_connect_time(settings: Any) -> None:
    # given a URL saved while loopback was allowed (as if its name resolved elsewhere then)
    with Receiver() as internal:
        row = run_webhook_step({"id": "hook", "type": "webhook", "url": internal.url.replace("127.0.0.1", "localhost")},
                               settings=settings, allowed_when_sent=[])
    assert internal.hits == []
    assert row.status == DeliveryStatus.FAILED  # permanent: retrying the same address will not help
    assert "127.0.0.1 is a loopback address" in row.last_error


def test_notify_sales_webhook_does_not_follow_a_redirect_to_an_internal_port() -> None:
    with Receiver(body=INTERNAL) as internal, \
            Receiver(status=307, headers={"Location": internal.url + "/admin"}) as outside:
        row = run_webhook_step({"id": "tell", "type": "notify_sales", "webhook": outside.url + "/hook"})
        assert len(outside.hits) == 1
    assert internal.hits == []
    assert row.status == DeliveryStatus.FAILED
    assert row.last_error == "permanent: HTTP 307 Temporary Redirect (redirects are not followed)"


@pytest.mark.parametrize("status", [400, 500])
def test_a_marketer_sees_the_status_of_an_error_answer_not_its_body(client: Any, role_users: Any,
                                                                     status: int) -> None:
    with Receiver(status=status, body=INTERNAL, headers={"Content-Type": "text/plain"}) as receiver:
        row = run_webhook_step({"id": "hook", "type": "webhook", "url": receiver.url + "/hook"})
    assert b"internal-only" not in row.last_error.encode()
    assert f"HTTP {status} " in row.last_error
    client.force_login(role_users["marketer"])
    page = client.get(reverse("admin:automation_webhookdelivery_changelist"))
    assert page.status_code == 200
    assert f"HTTP {status}".encode() in page.content
    assert b"internal-only" not in page.content


@pytest.mark.parametrize(("step", "problem"), [
    ({"id": "h", "type": "webhook", "url": "http://169.254.169.254/latest/meta-data/"}, "cloud metadata"),
    ({"id": "h", "type": "notify_sales", "webhook": "http://localhost:6379/"}, "loopback"),
    ({"id": "h", "type": "webhook", "url": "http://[::ffff:10.0.0.1]/hook"}, "private"),
])
def test_a_workflow_naming_an_internal_address_is_refused_at_save(settings: Any, step: dict[str, Any],
                                                                  problem: str) -> None:
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    issues = validate_workflow({"key": "wf", "trigger": {"event": "signed_up"}, "steps": [step]},
                               known_templates=set())
    found = [i for i in issues if i.step == "h"]
    assert len(found) == 1
    assert problem in found[0].message
