"""Per-key request limits shared by every web process: a fixed one-minute window counted in Redis
with INCR + EXPIRE in one MULTI/EXEC, so concurrent requests on any process see the same count."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from core.queues import get_connection

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60


def _now() -> float:
    return time.time()  # tests replace this to freeze the window


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # seconds until the window resets


def rate_limit_hit(*, key_id: int, limit: int) -> RateDecision:
    """Count one request for the key; allowed while the window's count is within `limit`.

    Redis unavailable: the request is allowed (logged). Redis may be flushed at any time; a flush
    only restarts the current window.
    """
    now = _now()
    window = int(now // WINDOW_SECONDS)
    retry_after = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
    name = f"leadflow:ratelimit:apikey:{key_id}:{window}"
    try:
        pipe = get_connection().pipeline(transaction=True)
        pipe.incr(name)
        pipe.expire(name, WINDOW_SECONDS * 2)
        count = int(pipe.execute()[0])
    except RedisError:
        log.warning("rate limiter: Redis unavailable, allowing the request for key %s", key_id, exc_info=True)
        return RateDecision(True, limit, limit, retry_after)
    return RateDecision(count <= limit, limit, max(0, limit - count), retry_after)
