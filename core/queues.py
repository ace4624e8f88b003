"""One way to get the Redis connection and queues, for both modes (embedded or REDIS_URL)."""

from __future__ import annotations

import os

import django_rq
from django.conf import settings
from redis import Redis
from rq import Queue

from core import embedded_redis


def ensure_redis() -> None:
    """Start the embedded server when no REDIS_URL is configured; a no-op otherwise."""
    if settings.EMBEDDED_REDIS:
        embedded_redis.ensure_running(settings.EMBEDDED_REDIS_SOCKET)


# One client (and so one connection pool) per process and Redis URL. django-rq builds a new client,
# pool and socket on every call, and redis-py reads its package metadata for every new connection:
# two of those per event API request were ~5 ms of CPU (issue 18, item 4). Keyed by pid (a forked
# child gets its own) and URL (tests point RQ_QUEUES elsewhere with override_settings).
_clients: dict[tuple[int, str], Redis] = {}


def get_connection() -> Redis:
    key = (os.getpid(), str(settings.RQ_QUEUES["default"].get("URL", "")))
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = django_rq.get_connection("default")
    return client


def get_queue(name: str) -> Queue:
    if name not in settings.QUEUE_NAMES:
        raise ValueError(f"unknown queue {name!r}; known: {', '.join(settings.QUEUE_NAMES)}")
    return django_rq.get_queue(name, connection=get_connection())
