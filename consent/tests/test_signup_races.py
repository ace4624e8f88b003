"""Signups racing each other (a double click, two tabs, an import while someone signs up): the
second never answers 500 and never makes a second contact or pending opt-in request; it is
treated like a submission of an address already known.

Real concurrency, two connections: the first submission's transaction is held open until the
second is waiting on it (PostgreSQL: waiting on the uncommitted row's unique index entry, seen in
pg_locks; SQLite: BEGIN IMMEDIATE waits for the write lock), then committed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from campaigns.models import Message
from consent import optin
from consent.forms_public import signup_django_form, signup_submit
from consent.models import OptInRequest, OptInStatus, SignupForm, Topic
from contacts.models import Contact, ContactList

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 30.0  # seconds to wait for the other connection to block; a bound, not a measurement


@pytest.fixture
def signup(db: None) -> SignupForm:
    form = SignupForm.objects.create(slug="newsletter", name="Newsletter", fields=["first_name"])
    form.lists.add(ContactList.objects.create(name="Newsletter"))
    form.topics.add(Topic.objects.create(key="product", name="Product news"))
    return form


def _until_the_other_waits_on_us() -> None:
    """PostgreSQL: return once another backend of this database waits on a lock (ours). SQLite:
    the other connection's BEGIN IMMEDIATE waits for our commit by itself."""
    if connection.vendor != "postgresql":
        return
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            # pg_locks, not pg_stat_activity: the latter is one snapshot per transaction
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid()")
            if cursor.fetchone()[0]:
                return
        time.sleep(0.02)
    raise AssertionError("the second connection never waited on the first")


def _race(first: Callable[[], Any], second: Callable[[], Any]) -> Any:
    """Run `first` in a transaction held open until `second`, on another thread and connection,
    is waiting on it; commit; return what `second` returned (or raised)."""
    start = threading.Barrier(2)
    outcome: dict[str, Any] = {}

    def other() -> None:
        try:
            start.wait()
            outcome["value"] = second()
        except Exception as exc:  # noqa: BLE001  handed to the test to assert on
            outcome["value"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=other)
    thread.start()
    with transaction.atomic():
        first()
        start.wait()
        _until_the_other_waits_on_us()
    thread.join(WAIT)
    assert not thread.is_alive()
    return outcome["value"]


def test_a_new_address_submitted_twice_at_once_is_one_contact_and_one_confirmation(
        signup: SignupForm, sender: Any) -> None:
    data = {"email": "ann@example.com", "first_name": "Ann"}
    form = signup_django_form(signup, data)
    assert form.is_valid()

    def second_tab() -> int:
        client = Client(raise_request_exception=False)
        return client.post(reverse("consent:form", args=["newsletter"]), data, REMOTE_ADDR="198.51.100.8").status_code

    status = _race(lambda: signup_submit(signup=signup, cleaned=form.cleaned_data, ip="198.51.100.7"), second_tab)

    assert status == 200
    contact = Contact.objects.get(email="ann@example.com")
    request = OptInRequest.objects.get(contact=contact, status=OptInStatus.PENDING)
    assert Message.objects.filter(contact=contact, source="double opt-in").count() == 1
    # the second submission was held like any known address's: applied when the owner confirms
    assert request.changes["events"][0]["form"] == "newsletter"


def test_confirmations_requested_twice_at_once_make_one_pending_request(db: None, sender: Any) -> None:
    contacts = [Contact.objects.create(email=f"c{i}@example.com") for i in range(3)]
    rows = [(c.pk, c.email, c.consent_status) for c in contacts]

    made = _race(lambda: optin.optin_start_many(contacts=rows[:2], source="import"),
                 lambda: optin.optin_start_many(contacts=rows, source="import"))

    assert made == 1  # the third contact only: the first two were the other import's
    for contact in contacts:
        assert OptInRequest.objects.filter(contact=contact, status=OptInStatus.PENDING).count() == 1
    assert Message.objects.filter(source="double opt-in").count() == 3
