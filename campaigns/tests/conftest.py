"""Fixtures for delivery tests: a real SMTP sink on loopback, a sender pointed at it, templates
and contacts (factories), and an empty Redis so throttles and kicks start fresh."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from campaigns.models import EmailTemplate, MessageKind, SenderProfile
from contacts.models import ConsentStatus, Contact
from core.queues import get_connection
from core.testing.smtpsink import SmtpSink


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as smtp:
        yield smtp


@pytest.fixture
def sender(db: None, sink: SmtpSink) -> SenderProfile:
    return SenderProfile.objects.create(name="Main", from_email="news@leadflow.test", from_name="Leadflow",
                                        email_url=sink.url, rate="1000/s", burst=100, is_default=True,
                                        postal_address="1 Example Street, Springfield")


def make_template(key: str = "welcome", **fields: Any) -> EmailTemplate:
    defaults: dict[str, Any] = {
        "subject": "Hello {{ contact.first_name|default:'there' }}",
        "html": '<p>Hi {{ contact.first_name|default:"there" }}, '
                'see <a href="https://example.com/webinar">the webinar</a>.</p>',
        "kind": MessageKind.MARKETING,
    }
    return EmailTemplate.objects.create(key=key, **{**defaults, **fields})


def make_contact(email: str, **fields: Any) -> Contact:
    fields.setdefault("consent_status", ConsentStatus.GRANTED)
    return Contact.objects.create(email=email, **fields)


@pytest.fixture
def template(db: None) -> EmailTemplate:
    return make_template()
