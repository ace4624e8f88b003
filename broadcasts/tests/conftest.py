"""Factories for broadcast tests: a list audience, a broadcast with its variants, and the test and
approval steps. The SMTP sink and the sender pointed at it are in the root conftest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from django.contrib.auth.models import User
from rq import SimpleWorker

from broadcasts.models import Broadcast, BroadcastVariant
from broadcasts.services import broadcast_approve, broadcast_save, broadcast_send_test
from campaigns.delivery import delivery_run
from campaigns.models import EmailTemplate, MessageKind, SenderProfile
from conftest import make_user
from contacts.models import ConsentStatus, Contact, ContactList
from core.queues import get_connection, get_queue

STAGING = "qa@leadflow.test"


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()


@pytest.fixture
def tester(db: None) -> Contact:
    """The test audience: one contact marked as test."""
    return Contact.objects.create(email="tester@leadflow.test", is_test=True, consent_status=ConsentStatus.GRANTED)


@pytest.fixture
def staged_sender(sender: SenderProfile) -> SenderProfile:
    SenderProfile.objects.filter(pk=sender.pk).update(staging_recipient=STAGING)
    sender.refresh_from_db()
    return sender


def make_template(key: str = "news", **fields: Any) -> EmailTemplate:
    defaults: dict[str, Any] = {"subject": "News for {{ contact.first_name|default:'you' }}",
                                "html": '<p>Hi, read <a href="https://example.com/news">the news</a>.</p>',
                                "kind": MessageKind.MARKETING}
    return EmailTemplate.objects.create(key=key, **{**defaults, **fields})


def make_contacts(n: int, prefix: str = "c", **fields: Any) -> list[Contact]:
    fields.setdefault("consent_status", ConsentStatus.GRANTED)
    return Contact.objects.bulk_create([Contact(email=f"{prefix}{i}@example.com", **fields) for i in range(n)])


def make_broadcast(sender: SenderProfile, contacts: Sequence[Contact], *, key: str = "news",
                   templates: Sequence[EmailTemplate] | None = None, subjects: Sequence[str] = (),
                   **fields: Any) -> Broadcast:
    audience = ContactList.objects.create(name=f"list {key}")
    audience.contacts.add(*contacts)
    broadcast = Broadcast.objects.create(key=key, name=key.title(), sender=sender, **fields)
    broadcast.lists.add(audience)
    templates = list(templates or [EmailTemplate.objects.filter(key="news").first() or make_template()])
    for position in range(max(len(templates), len(subjects))):
        BroadcastVariant.objects.create(broadcast=broadcast, position=position,
                                        template=templates[min(position, len(templates) - 1)],
                                        subject=subjects[position] if position < len(subjects) else "")
    return broadcast_save(broadcast=broadcast, actor=None)


def approve(broadcast: Broadcast, user: Any = None) -> Broadcast:
    """Test-send, then approve (as a superuser unless told)."""
    broadcast_send_test(broadcast=broadcast, actor=user)
    delivery_run(sender_id=broadcast.sender_id, max_seconds=5)  # the test sends go out first
    boss = User.objects.filter(username="boss").first() or make_user("boss", None, superuser=True)
    return broadcast_approve(broadcast=broadcast, actor=user or boss)


def work(*queues: str) -> None:
    """Run the queued jobs on a real RQ worker, in this process, until the queues are empty."""
    names = queues or ("default", "delivery")
    connection = get_connection()
    SimpleWorker([get_queue(name) for name in names], connection=connection).work(burst=True)
