"""Idempotency keys on POST /api/v1/events (docs/event-api.md, "Idempotency"): an item whose key
this API key already sent, or that repeats a key earlier in the batch, is stored once and counted
in `duplicates`; items without a key always count. Issue 18, item 4: one set-based INSERT per batch."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from contacts.apikeys import api_key_create
from contacts.models import ApiScope, Contact, Event
from core.queues import get_connection


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()  # rate-limit windows and queued jobs of earlier tests


@pytest.fixture
def raw_key() -> str:
    return api_key_create(name="website", scopes=[ApiScope.EVENTS_WRITE])[1]


def post(raw: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = Client().post("/api/v1/events", json.dumps({"events": events}), content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 202, response.content
    return dict(response.json())


def item(n: int, key: str | None = "", **fields: Any) -> dict[str, Any]:
    body = {"email": f"lead{n % 7}@example.com", "type": "page.viewed", "properties": {"n": n}, **fields}
    if key is not None:
        body["idempotency_key"] = key or f"k-{n}"
    return body


def stored_keys() -> list[str | None]:
    return sorted(Event.objects.values_list("idempotency_key", flat=True), key=str)


@pytest.mark.django_db
def test_keys_repeated_in_a_batch_and_across_batches_are_stored_once_and_counted_as_duplicates(raw_key: str) -> None:
    # Given a first batch: 5 keys, one of them twice, and 2 keyless items
    first = post(raw_key, [item(0), item(1), item(2), item(1), item(3), item(4), item(5, None), item(6, None)])
    assert (first["accepted"], first["duplicates"], first["errors"]) == (7, 1, [])
    # When a second batch repeats 3 of those keys (one twice), brings 2 new ones and a keyless item
    second = post(raw_key, [item(2), item(10), item(0), item(0), item(11), item(4), item(12, None)])
    # Then only the new keys and the keyless item are accepted; every repeat is a duplicate
    assert (second["accepted"], second["duplicates"], second["errors"]) == (3, 4, [])
    assert stored_keys() == sorted(["k-0", "k-1", "k-2", "k-3", "k-4", "k-10", "k-11", None, None, None], key=str)
    # And the first occurrence of a key in a batch is the one stored
    assert Event.objects.get(idempotency_key="k-1").properties == {"n": 1}


@pytest.mark.django_db
def test_a_retried_batch_reports_every_keyed_item_as_a_duplicate_and_stores_nothing(raw_key: str) -> None:
    batch = [item(n) for n in range(20)]
    assert post(raw_key, batch)["accepted"] == 20
    assert post(raw_key, batch) == {"accepted": 0, "duplicates": 20, "errors": []}
    assert Event.objects.count() == 20


@pytest.mark.django_db
def test_an_invalid_item_does_not_use_up_its_key(raw_key: str) -> None:
    assert post(raw_key, [item(1, type="Not Valid")])["errors"][0]["index"] == 0
    assert post(raw_key, [item(1)])["accepted"] == 1


def on_event_insert(before: Callable[[], None] = lambda: None,
                    after: Callable[[], None] = lambda: None) -> Callable[..., Any]:
    """A connection wrapper that runs `before` and `after` around the INSERT of events."""
    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        inserting = sql.lstrip().upper().startswith("INSERT INTO") and Event._meta.db_table in sql.split("(")[0]
        if inserting:
            before()
        try:
            return execute(sql, params, many, context)
        finally:
            if inserting:
                after()
    return wrapper


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_the_same_keys_store_each_once_and_only_one_accepts_it(raw_key: str) -> None:
    # Given two requests with the same 30 keys (contacts exist: neither writes anything but events)
    for n in range(7):
        Contact.objects.create(email=f"lead{n}@example.com")
    batch = [item(n) for n in range(30)]
    a_inserted, b_inserting = threading.Event(), threading.Event()
    answers: dict[str, dict[str, Any]] = {}

    def request(name: str, wrapper: Callable[..., Any]) -> None:
        try:
            with connection.execute_wrapper(wrapper):
                answers[name] = post(raw_key, batch)
        finally:
            connection.close()

    # When A has inserted its rows but not committed yet, and B gets to its INSERT meanwhile
    # (B has read whatever it reads before inserting while A's rows were still invisible). On
    # SQLite B cannot: its BEGIN IMMEDIATE waits for A's COMMIT, so A does not wait for it.
    overlap = connection.vendor == "postgresql"

    def a_pauses() -> None:
        a_inserted.set()
        if overlap:
            b_inserting.wait(timeout=30)

    a = threading.Thread(target=request, args=("a", on_event_insert(after=a_pauses)))
    b = threading.Thread(target=request, args=("b", on_event_insert(before=b_inserting.set)))
    a.start()
    assert a_inserted.wait(timeout=30)
    b.start()
    a.join(timeout=60)
    b.join(timeout=60)
    # Then each key is stored once, A accepted all 30 and B reports all 30 as duplicates
    assert answers["a"] == {"accepted": 30, "duplicates": 0, "errors": []}
    assert answers["b"] == {"accepted": 0, "duplicates": 30, "errors": []}
    assert Event.objects.count() == 30
