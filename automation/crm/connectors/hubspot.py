"""HubSpot: contacts batch upsert by email (POST /crm/v3/objects/contacts/batch/upsert).

Request: {"inputs": [{"id": <email>, "idProperty": "email", "properties": {...}}]}, at most 100.
Answer: 200 with "results" when all went through; 207 Multi-Status with "errors" (each with
"status": "error", "category", "message" and a "context" naming the inputs) and "numErrors" when
some did not. Each response carries X-HubSpot-RateLimit-Max/-Remaining/-Interval-Milliseconds;
when the interval's budget is spent, the connection pauses for the interval.
"""

from __future__ import annotations

import json
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

UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"
MAX_INPUTS = 100
RETRYABLE_CATEGORIES = {"RATE_LIMITS", "INTERNAL_ERROR", "TIMEOUT"}


class HubSpotConnector:
    def __init__(self, *, base_url: str, token: str, timeout: float, session: requests.Session | None = None) -> None:
        self.url = base_url.rstrip("/") + UPSERT_PATH
        self.timeout = timeout
        self.session = session or outbound.session()
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def request_body(self, items: list[OutItem]) -> dict[str, Any]:
        if len(items) > MAX_INPUTS:
            raise ValueError(f"HubSpot takes at most {MAX_INPUTS} inputs per batch upsert")
        return {"inputs": [{"id": item.email, "idProperty": "email",
                            "properties": {k: _property_value(v) for k, v in item.properties.items()}}
                           for item in items]}

    def send(self, items: list[OutItem]) -> SendResult:
        try:
            response = self.session.post(self.url, data=json.dumps(self.request_body(items)), headers=self.headers,
                                         timeout=self.timeout)
        except requests.RequestException as exc:
            return transport_failure(exc)
        pause = _rate_limit_pause(response)
        failure = status_failure(response, body_message=_message(response))
        if failure is not None:
            failure.pause = failure.pause or pause
            if failure.fate is Fate.RATE_LIMITED and failure.retry_after is None:
                failure.retry_after = _interval_seconds(response) or 10.0
            return failure
        try:
            body = response.json()
        except ValueError:
            return SendResult(Fate.RETRYABLE, response.status_code, "the answer was not JSON", pause=pause)
        return SendResult(Fate.DONE, response.status_code, items=_read_results(items, body), pause=pause)


def _property_value(value: Any) -> Any:
    """HubSpot property values are strings (numbers and booleans are accepted as such)."""
    if value is None:
        return ""
    if isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, sort_keys=True)


def _read_results(items: list[OutItem], body: Any) -> dict[str, ItemResult]:
    """Per input email: its result (ok, with the HubSpot id) or its error (the CRM's message).

    Results carry the upserted properties (email among them); errors name their inputs in
    "context". An input found in neither is left out: the caller retries it."""
    wanted = {item.email.lower(): item.email for item in items}
    outcome: dict[str, ItemResult] = {}
    if not isinstance(body, dict):
        return outcome
    for result in body.get("results") or []:
        props = result.get("properties") or {} if isinstance(result, dict) else {}
        email = wanted.get(str(props.get("email", "")).lower())
        if email:
            outcome[email] = ItemResult(ok=True, crm_id=str(result.get("id") or ""))
    for error in body.get("errors") or []:
        if not isinstance(error, dict):
            continue
        message = f"{error.get('category') or 'ERROR'}: {error.get('message') or 'no message'}"
        retryable = error.get("category") in RETRYABLE_CATEGORIES
        for email in _emails_in_context(error.get("context"), wanted):
            outcome[email] = ItemResult(ok=False, error=message, retryable=retryable)
    return outcome


def _emails_in_context(context: Any, wanted: dict[str, str]) -> list[str]:
    found: list[str] = []
    if isinstance(context, dict):
        for values in context.values():
            for value in values if isinstance(values, list) else [values]:
                email = wanted.get(str(value).lower())
                if email:
                    found.append(email)
    return found


def _message(response: requests.Response) -> str:
    """HubSpot's error category and message (its documented error body), else nothing: a body of
    another shape is not shown (the status says enough, and the URL may not be HubSpot's)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and isinstance(body.get("category"), str) and isinstance(body.get("message"), str):
        return f"{body['category']}: {body['message']}"[:MAX_REASON]
    return ""


def _interval_seconds(response: requests.Response) -> float | None:
    raw = response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")
    try:
        return int(raw) / 1000.0 if raw else None
    except ValueError:
        return None


def _rate_limit_pause(response: requests.Response) -> float | None:
    """When X-HubSpot-RateLimit-Remaining says the interval's budget is spent, hold off for the interval."""
    raw = response.headers.get("X-HubSpot-RateLimit-Remaining")
    try:
        remaining = int(raw) if raw is not None else None
    except ValueError:
        return None
    if remaining is not None and remaining <= 0:
        return _interval_seconds(response) or 10.0
    return None
