"""Salesforce: Leads or Contacts upserted by an external-id field through sObject Collections, with an
OAuth 2.0 client-credentials token refreshed before it expires (see automation/crm/fakes_salesforce.py
for the documents and the fake that follows them).

Token: POST <base URL>/services/oauth2/token (grant_type=client_credentials, client_id, client_secret)
-> access_token and instance_url. The answer has no expiry; a token lasts the org's session timeout
(`session_seconds`, default 2 h), so it is replaced at 80 % of that, and once more on a 401
INVALID_SESSION_ID (an admin may revoke sessions early).
Upsert: PATCH <instance_url>/services/data/<vNN.N>/composite/sobjects/<Lead|Contact>/<external id field>
{"allOrNone": false, "records": [{"attributes": {"type": ...}, <external id field>: <email>, ...}]},
at most 200; the answer lists one UpsertResult per record in order ({"success", "id", "errors"}).
Limits: `Sforce-Limit-Info: api-usage=<used>/<limit>` (24 h rolling) - at the limit the connection
pauses before Salesforce has to refuse; 403 REQUEST_LIMIT_EXCEEDED pauses it too.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from automation.crm.connectors.base import (
    Fate,
    ItemResult,
    OutItem,
    SendResult,
    status_failure,
    transport_failure,
)
from core import outbound

MAX_RECORDS = 200
VERSION = re.compile(r"^v(\d+)\.\d$")
SESSION_SECONDS = 7200.0
REFRESH_AT = 0.8  # of the session's lifetime
MAX_ITEM_REASON = 1000
OBJECTS = ("Lead", "Contact")
LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")


def version_problem(version: str) -> str | None:
    match = VERSION.match(version or "")
    if match and int(match.group(1)) >= 46:
        return None
    return 'Use a Salesforce API version such as "v62.0" (sObject Collections upsert needs v46.0 or later).'


class TokenError(Exception):
    pass


class SalesforceConnector:
    def __init__(self, *, base_url: str, client_id: str, client_secret: str, api_version: str, sobject: str,
                 external_id_field: str, timeout: float, session: requests.Session | None = None,
                 session_seconds: float = SESSION_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        if sobject not in OBJECTS:
            raise ValueError(f"Salesforce object {sobject!r}: use one of {', '.join(OBJECTS)}")
        self.base_url = base_url.rstrip("/")
        self.client_id, self.client_secret = client_id, client_secret
        self.api_version, self.sobject, self.external_id_field = api_version, sobject, external_id_field
        self.timeout = timeout
        self.session = session or outbound.session()
        self.session_seconds = session_seconds
        self.clock = clock
        self.lock = threading.Lock()
        self.token = ""
        self.instance_url = ""
        self.refresh_at = 0.0
        self.token_requests = 0

    # --- OAuth ---------------------------------------------------------------------------------------------

    def _fetch_token(self) -> None:
        self.token_requests += 1
        response = self.session.post(self.base_url + "/services/oauth2/token", timeout=self.timeout, data={
            "grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.client_secret})
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            error = body.get("error_description") or body.get("error") if isinstance(body, dict) else ""
            raise TokenError(f"token request: {outbound.status_text(response)}" + (f": {error}" if error else ""))
        instance = str(body.get("instance_url") or self.base_url).rstrip("/")
        self.token, self.instance_url = str(body["access_token"]), instance
        self.refresh_at = self.clock() + self.session_seconds * REFRESH_AT

    def _ensure_token(self, *, force: bool = False) -> None:
        with self.lock:
            if force or not self.token or self.clock() >= self.refresh_at:
                self._fetch_token()

    # --- Upsert ---------------------------------------------------------------------------------------------

    def request_body(self, items: list[OutItem]) -> dict[str, Any]:
        if len(items) > MAX_RECORDS:
            raise ValueError(f"Salesforce takes at most {MAX_RECORDS} records per sObject Collections request")
        records = []
        for item in items:
            record: dict[str, Any] = {"attributes": {"type": self.sobject}}
            for name, value in item.properties.items():
                if name == "email":
                    record["Email"] = item.email
                else:
                    record[name] = None if value == "" else value
            record[self.external_id_field] = item.email
            records.append(record)
        return {"allOrNone": False, "records": records}

    def send(self, items: list[OutItem]) -> SendResult:
        body = json.dumps(self.request_body(items), default=str)
        for attempt in range(2):
            try:
                self._ensure_token(force=attempt > 0)
                response = self.session.patch(
                    f"{self.instance_url}/services/data/{self.api_version}/composite/sobjects/{self.sobject}/"
                    f"{self.external_id_field}", data=body, timeout=self.timeout,
                    headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
            except TokenError as exc:
                return SendResult(Fate.PERMANENT, message=str(exc)[:500])
            except requests.RequestException as exc:
                return transport_failure(exc)
            if response.status_code == 401 and attempt == 0:
                continue  # the session ended before we thought: one fresh token, one resend
            break
        exhausted = _limit_spent(response)
        errors = _errors(response)
        codes = {e.get("errorCode") for e in errors}
        if response.status_code == 403 and "REQUEST_LIMIT_EXCEEDED" in codes:
            return SendResult(Fate.RATE_LIMITED, 403, f"403 from the CRM: REQUEST_LIMIT_EXCEEDED: {_first(errors)}",
                              daily_exhausted=True)
        message = f"{next(iter(sorted(c for c in codes if c)), 'ERROR')}: {_first(errors)}" if errors else ""
        failure = status_failure(response, body_message=message)
        if failure is not None:
            failure.daily_exhausted = exhausted
            return failure
        try:
            results = response.json()
        except ValueError:
            return SendResult(Fate.RETRYABLE, response.status_code, "the answer was not JSON",
                              daily_exhausted=exhausted)
        return SendResult(Fate.DONE, response.status_code, items=_read(items, results), daily_exhausted=exhausted)


def _errors(response: requests.Response) -> list[dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        return []
    return [e for e in body if isinstance(e, dict)] if isinstance(body, list) and response.status_code >= 300 else []


def _first(errors: list[dict[str, Any]]) -> str:
    return str(errors[0].get("message") or "")[:300] if errors else ""


def _read(items: list[OutItem], results: Any) -> dict[str, ItemResult]:
    """UpsertResults come in request order (one per record); a short or odd answer leaves the rest out
    (the caller retries them)."""
    outcome: dict[str, ItemResult] = {}
    if not isinstance(results, list):
        return outcome
    for item, result in zip(items, results, strict=False):
        if not isinstance(result, dict):
            continue
        if result.get("success"):
            outcome[item.email] = ItemResult(ok=True, crm_id=str(result.get("id") or ""))
        else:
            errors = [e for e in result.get("errors") or [] if isinstance(e, dict)]
            text = "; ".join(f"{e.get('statusCode') or 'ERROR'}: {e.get('message') or ''}" for e in errors)
            outcome[item.email] = ItemResult(ok=False, error=(text or "refused")[:MAX_ITEM_REASON])
    return outcome


def _limit_spent(response: requests.Response) -> bool:
    match = LIMIT_INFO.search(response.headers.get("Sforce-Limit-Info") or "")
    return match is not None and int(match.group(1)) >= int(match.group(2))
