"""CRM fixtures: the loopback fake HubSpot, connections, contacts, an injectable clock."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.utils import timezone

from automation.crm.fakes import FakeHubSpot, FakeHubSpotConfig
from automation.crm.models import CrmConnection, CrmSyncItem, SyncStatus
from automation.crm.services import SyncEnv, crm_sync_batch, throttle_for
from automation.crm.vault import encrypt
from contacts.models import Contact

MAPPING = {"first_name": "firstname", "last_name": "lastname", "company": "company", "score": "lead_score",
           "grade": "lead_grade", "lifecycle_stage": "lifecyclestage", "attributes.plan": "plan"}


class Clock:
    def __init__(self) -> None:
        self.at = timezone.now() + dt.timedelta(seconds=1)
        self.slept: list[float] = []

    def now(self) -> dt.datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += dt.timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
def fake_hubspot() -> Iterator[Callable[..., FakeHubSpot]]:
    started: list[FakeHubSpot] = []

    def start(**config: Any) -> FakeHubSpot:
        fake = FakeHubSpot(FakeHubSpotConfig(**config)).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def make_connection(db: None) -> Callable[..., CrmConnection]:
    def make(fake: FakeHubSpot | None = None, **fields: Any) -> CrmConnection:
        values: dict[str, Any] = {
            "name": f"hubspot-{CrmConnection.objects.count() + 1}", "kind": CrmConnection.Kind.HUBSPOT,
            "base_url": fake.url if fake else "http://127.0.0.1:9", "field_mapping": MAPPING,
            "rate_limit": "1000/s", "batch_size": 100, "timeout_seconds": 5,
            "token_encrypted": encrypt("fake-token"), **fields,
        }
        conn = CrmConnection(**values)
        conn.full_clean()
        conn.save()
        throttle_for(conn).reset()  # ids repeat across tests; Redis outlives the test database
        return conn

    return make


@pytest.fixture
def make_contacts(db: None) -> Callable[..., list[Contact]]:
    def make(count: int, *, prefix: str = "lead", **fields: Any) -> list[Contact]:
        Contact.objects.bulk_create([Contact(email=f"{prefix}{i}@example.com", first_name=f"First{i}",
                                             company="Acme", **fields) for i in range(count)])
        return list(Contact.objects.filter(email__startswith=prefix).order_by("id"))

    return make


@pytest.fixture
def clock() -> Clock:
    return Clock()


def drain(conn: CrmConnection, env: SyncEnv, clock: Clock, *, rounds: int = 500) -> int:
    """Run batches until nothing is pending, moving the fake clock to each due retry. Returns batches run."""
    for n in range(rounds):
        if not crm_sync_batch(connection_id=conn.pk, env=env).claimed:
            due = CrmSyncItem.objects.filter(connection=conn, status=SyncStatus.PENDING).order_by(
                "next_attempt_at").values_list("next_attempt_at", flat=True).first()
            if due is None:
                return n
            clock.at = max(clock.at, due)
    raise AssertionError("the queue did not drain")


def env_for(clock: Clock, **kw: Any) -> SyncEnv:
    return SyncEnv(now=clock.now, sleep=clock.sleep, rng=random.Random(1), **kw)
