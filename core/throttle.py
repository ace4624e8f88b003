"""A rate limiter shared by every worker process: GCRA (generic cell rate algorithm) in Redis.

Why GCRA: one key per limit holding a single timestamp (the "theoretical arrival time"), updated
atomically by a Lua script, so any number of workers on any number of machines draw from the same
budget, smoothly (no fixed-window double bursts at window edges). The script uses Redis' own clock
(`TIME`) so worker clocks cannot skew the schedule.

`take(limit, n)` asks for up to `n` tokens and gets back how many it may use *now* plus how long
to wait before the next one; callers send what they were granted and sleep for the rest. Losing
Redis (flush or restart) only forgets the schedule: the worst case is one burst's worth early.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis
from redis.commands.core import Script

from core.queues import get_connection

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*([smhd])\s*$")


@dataclass(frozen=True)
class Rate:
    """`count` events per `period` seconds, with `burst` extra tokens allowed back to back."""

    count: float
    period: float
    burst: int = 1

    @property
    def interval(self) -> float:
        return self.period / self.count

    def __str__(self) -> str:
        return f"{self.count:g}/{self.period:g}s"


def parse_rate(text: str, *, burst: int = 1) -> Rate:
    """'50/s', '10000/h', '100/10s' -> Rate. A clear ValueError names what was wrong."""
    match = _RATE_RE.match(text or "")
    if not match:
        raise ValueError(f"rate {text!r}: use COUNT/UNIT such as 50/s, 10000/h or 100/10s")
    count, mult, unit = float(match[1]), match[2], match[3]
    if count <= 0:
        raise ValueError(f"rate {text!r}: the count must be positive")
    period = _UNITS[unit] * (int(mult) if mult else 1)
    if period <= 0:
        raise ValueError(f"rate {text!r}: the period must be positive")
    return Rate(count=count, period=period, burst=max(1, burst))


# KEYS[1] = the limit's key. ARGV: interval (ms), burst, requested tokens.
# Returns {granted, wait_ms}: tokens granted now, and ms until the next token is due.
_GCRA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval   -- earliest time the next token may go
if now < allow_at then
  return {0, allow_at - now}
end
local granted = math.floor((now - allow_at) / interval) + 1
if granted > want then granted = want end
tat = tat + granted * interval
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now + burst * interval + 1000))
local next_at = tat - (burst - 1) * interval
local wait = 0
if next_at > now then wait = next_at - now end
return {granted, wait}
"""


# KEYS[1] = the limit's key. ARGV: interval (ms), burst, pause (ms). Pushes the schedule so that no
# token is granted for `pause` ms from now (a 429's Retry-After, a spent rate-limit window).
_PAUSE = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local pause = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local wanted = now + pause + (burst - 1) * interval
if wanted > tat then
  redis.call('SET', KEYS[1], tostring(wanted), 'PX', math.ceil(wanted - now + burst * interval + 1000))
end
return 1
"""


@dataclass(frozen=True)
class Grant:
    granted: int
    wait: float  # seconds until the next token is due


class Throttle:
    """One named limit, e.g. Throttle('sender:3', parse_rate('50/s', burst=5))."""

    def __init__(self, name: str, rate: Rate, connection: Redis | None = None) -> None:
        self.key = f"leadflow:throttle:{name}"
        self.rate = rate
        self._conn = connection
        self._script: Script | None = None

    @property
    def connection(self) -> Redis:
        return self._conn or get_connection()

    def take(self, want: int = 1) -> Grant:
        if want < 1:
            return Grant(0, 0.0)
        if self._script is None:
            self._script = self.connection.register_script(_GCRA)
        interval_ms = self.rate.interval * 1000.0
        granted, wait_ms = self._script(keys=[self.key], args=[interval_ms, self.rate.burst, want])
        return Grant(int(granted), float(wait_ms) / 1000.0)

    def acquire(self, want: int = 1, *, max_wait: float = 30.0, sleep: Callable[[float], None] = time.sleep) -> int:
        """Block until at least one token is granted (up to max_wait seconds); returns the count.

        Returns 0 when the budget would not free up within max_wait, so a batch can give its
        claimed rows back instead of holding them.
        """
        deadline = time.monotonic() + max_wait
        while True:
            grant = self.take(want)
            if grant.granted:
                return grant.granted
            if time.monotonic() + grant.wait > deadline:
                return 0
            sleep(max(grant.wait, 0.001))

    def pause(self, seconds: float) -> None:
        """Grant nothing to anyone sharing this limit for `seconds` (a 429's Retry-After)."""
        if seconds <= 0:
            return
        self.connection.register_script(_PAUSE)(
            keys=[self.key], args=[self.rate.interval * 1000.0, self.rate.burst, seconds * 1000.0])

    def reset(self) -> None:
        self.connection.delete(self.key)
