"""Factories for delivery tests (templates, consenting contacts) and an empty Redis so throttles
and kicks start fresh. The SMTP sink and the sender pointed at it are in the root conftest."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest

from campaigns.models import EmailTemplate, MessageKind
from contacts.models import ConsentStatus, Contact
from core.queues import get_connection


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()


def make_template(key: str = "welcome", **fields: Any) -> EmailTemplate:
    defaults: dict[str, Any] = {
        "subject": "Hello {{ contact.first_name|default:'there' }}",
        "html": '<p>Hi {{ contact.first_name|default:"there" }}, '
                'see <a href="https://example.com/webinar">the webinar</a>.</p>',
        "kind": MessageKind.MARKETING,
    }
    return EmailTemplate.objects.create(key=key, **{**defaults, **fields})


@contextmanager
def lazy_score_reads() -> Iterator[list[int]]:
    """The ids of contacts whose score or grade was read one contact at a time (Contact's lazy read
    of ContactScore) inside the block, rather than with the query that loaded them."""
    reads: list[int] = []
    load = Contact._load_scorecard

    def counted(contact: Contact) -> None:
        reads.append(contact.pk)
        load(contact)

    with mock.patch.object(Contact, "_load_scorecard", counted):
        yield reads


def make_contact(email: str, **fields: Any) -> Contact:
    fields.setdefault("consent_status", ConsentStatus.GRANTED)
    return Contact.objects.create(email=email, **fields)


@pytest.fixture
def template(db: None) -> EmailTemplate:
    return make_template()
