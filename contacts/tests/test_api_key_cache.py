"""A web process keeps the API keys it authenticated for CACHE_SECONDS (issue 18, item 4: the
lookup was a query on every request). Changes made through contacts.apikeys or the ORM take effect
in the same process at once; a revocation or scope change made in another process takes effect
within CACHE_SECONDS (the documented bound), never later."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.test import Client
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries

from contacts import apikeys
from contacts.apikeys import CACHE_SECONDS, api_key_authenticate, api_key_create, api_key_revoke, api_key_update
from contacts.models import ApiKey, ApiScope
from core.queues import get_connection

pytestmark = pytest.mark.django_db


class Clock:
    """The cache's monotonic clock, stepped by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    get_connection().flushdb()  # rate-limit windows of earlier tests
    apikeys.api_key_cache_clear()
    clock = Clock()
    monkeypatch.setattr(apikeys, "_now", clock)
    yield clock
    apikeys.api_key_cache_clear()


def post_event(raw: str) -> int:
    body = {"events": [{"email": "ann@example.com", "type": "page.viewed"}]}
    response = Client().post("/api/v1/events", json.dumps(body), content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {raw}")
    return int(response.status_code)


def test_a_known_key_is_not_read_from_the_database_again_within_the_bound(
        clock: Clock, django_assert_num_queries: DjangoAssertNumQueries) -> None:
    key, raw = api_key_create(name="website")
    assert api_key_authenticate(raw) is not None  # read, and last_used_at written
    clock.now += CACHE_SECONDS / 2
    with django_assert_num_queries(0):
        assert api_key_authenticate(raw) == key


def test_a_key_revoked_in_another_process_is_refused_within_the_bound(clock: Clock) -> None:
    key, raw = api_key_create(name="website")
    assert post_event(raw) == 202
    # Another process revokes it: this process hears nothing (an UPDATE, no signal here)
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    clock.now += CACHE_SECONDS - 0.01
    assert post_event(raw) == 202  # the bound: still trusted just before it
    clock.now += 0.01
    assert post_event(raw) == 401
    clock.now -= CACHE_SECONDS  # and it stays refused (a refused key is not cached)
    assert post_event(raw) == 401


def test_a_scope_removed_in_another_process_is_enforced_within_the_bound(clock: Clock) -> None:
    key, raw = api_key_create(name="website", scopes=[ApiScope.EVENTS_WRITE])
    assert post_event(raw) == 202
    ApiKey.objects.filter(pk=key.pk).update(scopes=[ApiScope.CONTACTS_READ])
    clock.now += CACHE_SECONDS
    assert post_event(raw) == 403


def test_revoking_or_editing_through_the_service_takes_effect_in_this_process_at_once(clock: Clock) -> None:
    key, raw = api_key_create(name="website", scopes=[ApiScope.EVENTS_WRITE])
    other_key, other_raw = api_key_create(name="crm", scopes=[ApiScope.EVENTS_WRITE])
    assert post_event(raw) == 202
    assert post_event(other_raw) == 202
    # The admin edits the row it loaded itself, not the cached object
    api_key_update(api_key=ApiKey.objects.get(pk=key.pk), scopes=[ApiScope.CONTACTS_READ])
    assert post_event(raw) == 403
    api_key_revoke(api_key=ApiKey.objects.get(pk=other_key.pk))
    assert post_event(other_raw) == 401


def test_a_wrong_secret_is_refused_while_the_right_key_is_cached(clock: Clock) -> None:
    _, raw = api_key_create(name="website")
    assert post_event(raw) == 202
    forged = raw[:-4] + ("AAAA" if not raw.endswith("AAAA") else "BBBB")
    assert post_event(forged) == 401
    assert post_event(raw) == 202
