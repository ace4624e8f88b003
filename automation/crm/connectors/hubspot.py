"""HubSpot: contacts batch upsert by email, as HubSpot documents it (see automation/crm/fakes.py for
the documents and the fake that follows them).

Path: `/crm/v3/objects/contacts/batch/upsert` (api_version "v3") or the date-versioned
`/crm/objects/<YYYY-MM>/contacts/batch/upsert` (e.g. "2026-03"), per connection.
Request: {"inputs": [{"id": <email>, "idProperty": "email", "objectWriteTraceId": <contact id>,
"properties": {name: string}}]}, at most 100; every value is a string (HubSpot's property values
are strings: numbers as decimal text, booleans "true"/"false", none as "").
Answer: 200 with "results"; 207 with "errors" naming their inputs by objectWriteTraceId in
"context" (multi-status, only when every input carries a unique trace id); a 400 VALIDATION_ERROR
refuses the whole batch without naming the input, so the result is `splittable` and the sync
service bisects it. 429: `policyName` TEN_SECONDLY_ROLLING (hold off for the interval) or DAILY
(the connection pauses until the account's midnight). Rate-limit headers: when
X-HubSpot-RateLimit-Remaining is 0 the connection pauses for the interval, when
X-HubSpot-RateLimit-Daily-Remaining is 0 it pauses until the daily reset, before HubSpot has to say 429.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import requests

from automation.crm.connectors.base import (
    MAX_REASON,
    Fate,
    ItemResult,
    OutItem,
    SendResult,
    status_failure,
    transport_failure,
)
from core import outbound

V3 = "v3"
DATE_VERSION = re.compile(r"^\d{4}-\d{2}$")
LATEST_VERSION = "2026-03"
MAX_INPUTS = 100
MAX_ITEM_REASON = 1000  # the CRM's message kept with a contact refused alone
RETRYABLE_CATEGORIES = {"RATE_LIMITS", "INTERNAL_ERROR", "TIMEOUT"}


def version_problem(version: str) -> str | None:
    if version == V3 or DATE_VERSION.match(version or ""):
        return None
    return f'Use "v3" or a date version such as "{LATEST_VERSION}" (YYYY-MM).'


def upsert_path(version: str) -> str:
    if version == V3:
        return "/crm/v3/objects/contacts/batch/upsert"
    if problem := version_problem(version):
        raise ValueError(f"api version {version!r}: {problem}")
    return f"/crm/objects/{version}/contacts/batch/upsert"


class HubSpotConnector:
    def __init__(self, *, base_url: str, token: str, timeout: float, api_version: str = V3,
                 session: requests.Session | None = None) -> None:
        self.url = base_url.rstrip("/") + upsert_path(api_version)
        self.timeout = timeout
        self.session = session or outbound.session()
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def request_body(self, items: list[OutItem]) -> dict[str, Any]:
        if len(items) > MAX_INPUTS:
            raise ValueError(f"HubSpot takes at most {MAX_INPUTS} inputs per batch upsert")
        return {"inputs": [{"id": item.email, "idProperty": "email", "objectWriteTraceId": str(item.contact_id),
                            "properties": {k: property_value(v) for k, v in item.properties.items()}}
                           for item in items]}

    def send(self, items: list[OutItem]) -> SendResult:
        try:
            response = self.session.post(self.url, data=json.dumps(self.request_body(items)), headers=self.headers,
                                         timeout=self.timeout)
        except requests.RequestException as exc:
            return transport_failure(exc)
        pause = _rate_limit_pause(response)
        daily_spent = _daily_remaining(response) == 0
        body = _json(response)
        if response.status_code == 429:
            daily = daily_spent or (isinstance(body, dict) and body.get("policyName") == "DAILY")
            policy = body.get("policyName") if isinstance(body, dict) else None
            result = status_failure(response, body_message=f"{policy}: {body.get('message')}" if policy else "")
            assert result is not None
            if result.retry_after is None:
                result.retry_after = _interval_seconds(response) or 10.0
            result.daily_exhausted = daily
            return result
        if response.status_code == 400 and _category(body) == "VALIDATION_ERROR":
            # Some input's value was refused and the answer does not say which: nothing was applied.
            message = f"400 Bad Request from the CRM: VALIDATION_ERROR: {body.get('message')}"[:MAX_ITEM_REASON]
            return SendResult(Fate.PERMANENT, 400, message, pause=pause, splittable=True, daily_exhausted=daily_spent)
        failure = status_failure(response, body_message=_message(body))
        if failure is not None:
            failure.pause = failure.pause or pause
            failure.daily_exhausted = daily_spent
            return failure
        if body is None:
            return SendResult(Fate.RETRYABLE, response.status_code, "the answer was not JSON", pause=pause,
                              daily_exhausted=daily_spent)
        return SendResult(Fate.DONE, response.status_code, items=_read_results(items, body), pause=pause,
                          daily_exhausted=daily_spent)


def property_value(value: Any) -> str:
    """HubSpot property values are strings: numbers as plain decimal text, booleans "true"/"false"."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        return format(Decimal(str(value)).normalize(), "f") if value == value else ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _category(body: Any) -> str | None:
    return body.get("category") if isinstance(body, dict) and isinstance(body.get("message"), str) else None


def _read_results(items: list[OutItem], body: Any) -> dict[str, ItemResult]:
    """Per input email: its result (ok, with the HubSpot id) or its error (the CRM's message).

    Results and errors are matched by objectWriteTraceId (our contact id), falling back on the
    email (results carry the properties, errors may name ids in "context"). An input found in
    neither is left out: the caller retries it."""
    by_trace = {str(item.contact_id): item.email for item in items}
    wanted = {item.email.lower(): item.email for item in items}
    outcome: dict[str, ItemResult] = {}
    if not isinstance(body, dict):
        return outcome
    for result in body.get("results") or []:
        if not isinstance(result, dict):
            continue
        props = result.get("properties") or {}
        email = by_trace.get(str(result.get("objectWriteTraceId"))) or wanted.get(str(props.get("email", "")).lower())
        if email:
            outcome[email] = ItemResult(ok=True, crm_id=str(result.get("id") or ""))
    for error in body.get("errors") or []:
        if not isinstance(error, dict):
            continue
        message = f"{error.get('category') or 'ERROR'}: {error.get('message') or 'no message'}"[:MAX_ITEM_REASON]
        retryable = error.get("category") in RETRYABLE_CATEGORIES
        for email in _emails_in_context(error.get("context"), by_trace, wanted):
            outcome[email] = ItemResult(ok=False, error=message, retryable=retryable)
    return outcome


def _emails_in_context(context: Any, by_trace: dict[str, str], wanted: dict[str, str]) -> list[str]:
    found: list[str] = []
    if isinstance(context, dict):
        for key, values in context.items():
            for value in values if isinstance(values, list) else [values]:
                email = by_trace.get(str(value)) if key == "objectWriteTraceId" else wanted.get(str(value).lower())
                if email:
                    found.append(email)
    return found


def _message(body: Any) -> str:
    """HubSpot's error category and message (its documented error body), else nothing: a body of
    another shape is not shown (the status says enough, and the URL may not be HubSpot's)."""
    if isinstance(body, dict) and isinstance(body.get("category"), str) and isinstance(body.get("message"), str):
        return f"{body['category']}: {body['message']}"[:MAX_REASON]
    return ""


def _header_int(response: requests.Response, name: str) -> int | None:
    raw = response.headers.get(name)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _interval_seconds(response: requests.Response) -> float | None:
    ms = _header_int(response, "X-HubSpot-RateLimit-Interval-Milliseconds")
    return ms / 1000.0 if ms else None


def _daily_remaining(response: requests.Response) -> int | None:
    return _header_int(response, "X-HubSpot-RateLimit-Daily-Remaining")


def _rate_limit_pause(response: requests.Response) -> float | None:
    """When X-HubSpot-RateLimit-Remaining says the interval's budget is spent, hold off for the interval."""
    remaining = _header_int(response, "X-HubSpot-RateLimit-Remaining")
    if remaining is not None and remaining <= 0:
        return _interval_seconds(response) or 10.0
    return None
