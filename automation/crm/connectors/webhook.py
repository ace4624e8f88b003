"""A generic signed webhook: the batch is POSTed as JSON, signed with the connection's secret.

Body: {"contacts": [{"email": ..., "properties": {...}}]}. Headers: X-Leadflow-Timestamp (unix
seconds) and X-Leadflow-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">, the same
scheme the inbound endpoint checks. A 2xx accepts the batch; its body may report per-item
outcomes: {"results": [{"email": ..., "status": "ok" | "error", "id": ..., "message": ...}]}.
429 (Retry-After) and 5xx/timeouts are retried, other 4xx fail the batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import requests

from automation.crm.connectors.base import Fate, ItemResult, OutItem, SendResult, status_failure, transport_failure
from core import outbound
from core.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookConnector", "sign"]


class WebhookConnector:
    def __init__(self, *, url: str, token: str, secret: str, timeout: float, session: requests.Session | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.url, self.token, self.secret, self.timeout = url, token, secret, timeout
        self.session = session or outbound.session()
        self.clock = clock

    def send(self, items: list[OutItem]) -> SendResult:
        body = json.dumps({"contacts": [{"email": i.email, "properties": i.properties} for i in items]},
                          default=str).encode("utf-8")
        timestamp = str(int(self.clock()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, timestamp, body)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            return transport_failure(exc)
        failure = status_failure(response)
        if failure is not None:
            if failure.fate is Fate.RATE_LIMITED and failure.retry_after is None:
                failure.retry_after = 10.0
            return failure
        return SendResult(Fate.DONE, response.status_code, items=_read(items, response))


def _read(items: list[OutItem], response: requests.Response) -> dict[str, ItemResult]:
    outcome = {item.email: ItemResult(ok=True) for item in items}
    try:
        body: Any = response.json()
    except ValueError:
        return outcome
    wanted = {item.email.lower(): item.email for item in items}
    for result in (body.get("results") or []) if isinstance(body, dict) else []:
        email = wanted.get(str(result.get("email", "")).lower()) if isinstance(result, dict) else None
        if email is None:
            continue
        if result.get("status", "ok") == "ok":
            outcome[email] = ItemResult(ok=True, crm_id=str(result.get("id") or ""))
        else:
            outcome[email] = ItemResult(ok=False, error=str(result.get("message") or "rejected")[:1000])
    return outcome
