"""What every connector speaks: items out, per-item outcomes and the request's fate back.

A connector sends one batch in one request and never touches the database; the sync service
(automation.crm.services) claims rows, throttles, and records what the result says. A new CRM
(Salesforce: the composite sObject collections upsert) is one more class with `send`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import requests

from core.outbound import OutboundRefused, ResponseTooLarge, status_text

MAX_REASON = 200  # characters of a vendor's error message kept with the status


@dataclass(frozen=True)
class OutItem:
    contact_id: int
    email: str
    properties: dict[str, Any]


@dataclass(frozen=True)
class ItemResult:
    ok: bool
    crm_id: str = ""
    error: str = ""  # the CRM's own message when not ok
    retryable: bool = False


class Fate(Enum):
    DONE = "done"  # the request was answered; see the per-item results
    RATE_LIMITED = "rate_limited"  # 429: nothing was applied; wait retry_after and resend
    RETRYABLE = "retryable"  # 5xx, timeout, connection error: back off and resend
    PERMANENT = "permanent"  # the batch was refused (401, 400, ...): every item fails with the message


@dataclass
class SendResult:
    fate: Fate
    http_status: int | None = None
    message: str = ""
    items: dict[str, ItemResult] = field(default_factory=dict)  # by email
    retry_after: float | None = None  # seconds, from Retry-After
    pause: float | None = None  # seconds the whole connection should hold off (rate-limit headers say so)
    # A 400 that refuses the batch for some input's values without saying which (HubSpot without
    # multi-status): the sync service splits the batch until each bad input fails alone.
    splittable: bool = False
    # The CRM's daily budget is spent (a DAILY 429, or a remaining-daily header of 0): the connection
    # pauses until the CRM's day turns over.
    daily_exhausted: bool = False


class Connector(Protocol):
    def send(self, items: list[OutItem]) -> SendResult: ...


def retry_after_seconds(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return max(0.0, (moment - (now or dt.datetime.now(dt.UTC))).total_seconds())


def transport_failure(exc: requests.RequestException) -> SendResult:
    """Timeouts and connection errors: nothing is known about the batch, so it is retried. A refused
    destination (an internal address, see core.outbound) fails: retrying will not change it."""
    if isinstance(exc, OutboundRefused):
        return SendResult(Fate.PERMANENT, message=f"refused: {str(exc)[:300]}")
    if isinstance(exc, ResponseTooLarge):
        # The CRM may have applied the batch; upserts by email make the retry harmless.
        return SendResult(Fate.RETRYABLE, exc.status, str(exc)[:MAX_REASON])
    kind = "timed out" if isinstance(exc, requests.Timeout) else "connection failed"
    return SendResult(Fate.RETRYABLE, message=f"{kind}: {type(exc).__name__}: {str(exc)[:300]}")


def status_failure(response: requests.Response, *, body_message: str = "") -> SendResult | None:
    """The fate of a non-success status, or None for a success the connector reads itself.

    The message is the status and its reason phrase, plus `body_message` when the connector read
    the vendor's documented error field; never the raw body (it may be anything the URL answers)."""
    status = response.status_code
    text = f"{status_text(response)} from the CRM" + (f": {body_message[:MAX_REASON]}" if body_message else "")
    if status == 429:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        return SendResult(Fate.RATE_LIMITED, status, f"rate limited: {text}", retry_after=retry_after)
    if status >= 500 or status == 408:
        return SendResult(Fate.RETRYABLE, status, text)
    if status >= 300:  # redirects are not followed (core.outbound): the URL is wrong
        return SendResult(Fate.PERMANENT, status, text)
    return None
