"""core.queues hands out one Redis client per process and URL: django-rq would build a new client,
pool and socket per call (and redis-py reads its package metadata per new connection)."""

from __future__ import annotations

from django.conf import settings
from django.test import override_settings

from core.queues import get_connection, get_queue


def test_the_connection_and_the_queues_share_one_client() -> None:
    client = get_connection()
    assert get_connection() is client
    assert get_queue("events").connection is client
    assert client.ping()


def test_another_redis_url_gets_its_own_client() -> None:
    client = get_connection()
    queues = {name: {**config, "URL": "redis://127.0.0.1:1/0"} for name, config in settings.RQ_QUEUES.items()}
    with override_settings(RQ_QUEUES=queues):
        elsewhere = get_connection()
        assert elsewhere is not client
        assert get_connection() is elsewhere
    assert get_connection() is client
