"""A sender profile's SMTP server is an outbound connection like any other (issue 14, item 3): an
internal address is refused when the profile is saved and, for names, on the address connected to."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from campaigns.delivery import delivery_run_batch
from campaigns.models import Message, MessageStatus, SenderProfile
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact

pytestmark = pytest.mark.django_db


def profile(email_url: str) -> SenderProfile:
    return SenderProfile(name="p", from_email="news@leadflow.test", email_url=email_url)


@pytest.mark.parametrize(("email_url", "problem"), [
    ("smtp://127.0.0.1:25", "loopback"), ("smtp+tls://user:pw@169.254.169.254:587", "cloud metadata"),
    ("smtp://localhost:1025", "loopback"), ("smtp+ssl://10.1.2.3:465", "private"),
])
def test_an_internal_smtp_host_is_refused_at_save(settings: Any, email_url: str, problem: str) -> None:
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    with pytest.raises(ValidationError) as exc:
        profile(email_url).full_clean()
    (message,) = exc.value.message_dict["email_url"]
    assert message.startswith("SMTP host ")
    assert problem in message


@pytest.mark.parametrize("email_url", ["smtp+tls://user:pw@smtp.example.com:587", "consolemail://", ""])
def test_a_public_relay_or_a_local_backend_is_accepted(settings: Any, email_url: str) -> None:
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    profile(email_url).full_clean()


def test_a_local_relay_is_allowed_by_the_setting(settings: Any) -> None:
    settings.OUTBOUND_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    profile("smtp://10.1.2.3:25").full_clean()


def test_delivery_refuses_an_internal_smtp_server_at_connect_time(sender: SenderProfile, template: Any,
                                                                 sink: Any, settings: Any) -> None:
    # given a sender whose SMTP server (the loopback sink) was saved while it was allowed
    contact = make_contact("p@example.com")
    messages_queue(template=template, items=[QueueItem(contact.pk, "ssrf:1")])
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    # when a batch runs, nothing reaches the server and the message says why
    delivery_run_batch(sender=sender)
    assert sink.received == []
    message = Message.objects.get(contact=contact)
    assert message.status == MessageStatus.DEFERRED
    assert "127.0.0.1 is a loopback address" in message.last_error


def test_delivery_to_an_allowed_smtp_server_still_sends(sender: SenderProfile, template: Any, sink: Any) -> None:
    contact = make_contact("p@example.com")
    messages_queue(template=template, items=[QueueItem(contact.pk, "ok:1")])
    delivery_run_batch(sender=sender)
    assert [r.rcpt_tos for r in sink.received] == [["p@example.com"]]
