"""One way to get the Redis connection and queues, for both modes (embedded or REDIS_URL)."""

from __future__ import annotations

import django_rq
from django.conf import settings
from redis import Redis
from rq import Queue

from core import embedded_redis


def ensure_redis() -> None:
    """Start the embedded server when no REDIS_URL is configured; a no-op otherwise."""
    if settings.EMBEDDED_REDIS:
        embedded_redis.ensure_running(settings.EMBEDDED_REDIS_SOCKET)


def get_connection() -> Redis:
    return django_rq.get_connection("default")


def get_queue(name: str) -> Queue:
    if name not in settings.QUEUE_NAMES:
        raise ValueError(f"unknown queue {name!r}; known: {', '.join(settings.QUEUE_NAMES)}")
    return django_rq.get_queue(name)
