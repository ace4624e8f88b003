"""A loopback fake HubSpot for the contract tests and bench/crm_sync.py: a real HTTP server on
127.0.0.1 (http.server in a thread) answering the contacts batch upsert as HubSpot documents it.

Sources (each behaviour below names the one it follows):
[UPSERT]  Upsert a batch of contacts, https://developers.hubspot.com/docs/api-reference/latest/crm/objects/
          contacts/batch/upsert-contacts (date-versioned path `/crm/objects/2026-03/contacts/batch/upsert`)
          and the legacy page .../legacy/crm/objects/contacts/batch/upsert-contacts (`/crm/v3/objects/
          contacts/batch/upsert`): request `{"inputs": [{"id", "idProperty", "properties", "objectWriteTraceId"}]}`,
          properties typed as string -> string; answer `{"status", "results": [{"id", "properties", "new",
          "createdAt", "updatedAt", "archived", "objectWriteTraceId"}], "startedAt", "completedAt"}` plus
          `"errors": [{"status", "category", "message", "context"}]` and `"numErrors"` on a multi-status.
[ERRORS]  Error handling, https://developers.hubspot.com/docs/api-reference/latest/error-handling:
          "207 Multi-Status ... when you've enabled multi-status error handling"; "include a unique
          objectWriteTraceId value for each input" - so without one per input, a single invalid input
          makes the whole request fail. Error bodies `{"status": "error", "message", "correlationId",
          "category"}`; 401 category INVALID_AUTHENTICATION.
[VALID]   Changelog "Property Validations Rules will be enforced for APIs and Integrations" (2023) and
          "Enhanced Validations for Non-String Properties" (2025): an invalid value answers 400, category
          VALIDATION_ERROR, message `Property values were not valid: [{"isValid": false, "message", "error",
          "name"}]`; enumeration values must be one of the property's options (error INVALID_OPTION here)
          and carry no leading/trailing whitespace (LEADING_TRAILING_WHITESPACE).
[STAGES]  Knowledge base "Use lifecycle stages": the default lifecyclestage options (internal names
          subscriber, lead, marketingqualifiedlead, salesqualifiedlead, opportunity, customer, evangelist,
          other).
[LIMITS]  API usage guidelines (developers.hubspot.com/apisbytier, docs/api/usage-details): 100
          requests per 10 s and 250,000 (Free/Starter) or 500,000 a day; "The daily limits reset at midnight
          based on the time zone setting of the HubSpot account"; over a limit, 429 with
          `{"status": "error", "message": "You have reached your daily limit.", "errorType": "RATE_LIMIT",
          "correlationId", "policyName": "DAILY"|"TEN_SECONDLY_ROLLING", "requestId"}`.
[HEADERS] Changelog 2018-11-06 "Rate limit information headers": X-HubSpot-RateLimit-Daily,
          -Daily-Remaining, -Interval-Milliseconds, -Max, -Remaining on each response.

Not from the documents (test knobs): random 5xx (`error_rate`, `error_status`, e.g. 502 from a
gateway), hangs (`timeout_rate`), `fail_first`, and `multi_status=False`, which answers 400 even
with trace ids (the error-handling page promises 207 for batch *create*; a client must survive an
upsert that does not honour it). The fake counts what it applied per email, so callers can check
nothing was lost or sent twice. `new_day()` resets the daily budget (midnight in the account's zone).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from core.testing.loopback import LoopbackHttp

UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"  # [UPSERT] legacy v3
VERSIONED_PATH = re.compile(r"^/crm/objects/(\d{4}-\d{2})/contacts/batch/upsert$")  # [UPSERT] date-versioned
MAX_INPUTS = 100  # [UPSERT]

# [STAGES] the default options of lifecyclestage, by internal name.
LIFECYCLE_STAGES = ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer",
                    "evangelist", "other")


def default_properties() -> dict[str, dict[str, Any]]:
    """The account's contact properties: HubSpot's defaults Leadflow maps, plus the custom ones the tests
    and the bench map (lead_score, lead_grade, plan). Unknown names are refused (PROPERTY_DOESNT_EXIST)."""
    props: dict[str, dict[str, Any]] = {name: {"type": "string"} for name in (
        "email", "firstname", "lastname", "company", "jobtitle", "phone", "country", "hs_legal_basis", "lead_grade",
        "plan", "mql_date")}
    props["lead_score"] = {"type": "number"}
    props["lifecyclestage"] = {"type": "enumeration", "options": list(LIFECYCLE_STAGES)}
    return props


@dataclass
class FakeHubSpotConfig:
    token: str = "fake-token"  # noqa: S105  a test double
    limit: int = 100  # [LIMITS] requests per rolling window
    window: float = 10.0  # seconds
    daily_limit: int = 250_000  # [LIMITS] Free/Starter
    versions: tuple[str, ...] = ("v3", "2026-03")  # paths served; others answer 404
    multi_status: bool = True  # [ERRORS] honour objectWriteTraceId with a 207; False: always 400
    properties: dict[str, dict[str, Any]] = field(default_factory=default_properties)
    error_rate: float = 0.0  # share of requests answered error_status (nothing applied)
    error_status: int = 500
    timeout_rate: float = 0.0  # share of requests that hang for hang_seconds (nothing applied)
    hang_seconds: float = 2.0
    fail_first: int = 0  # the first N requests answer error_status
    invalid: Callable[[str], bool] = lambda email: "invalid" in email  # INVALID_EMAIL for these
    seed: int = 7


@dataclass
class FakeHubSpotStats:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    policies: Counter[str] = field(default_factory=Counter)  # policyName of each 429
    upserts: Counter[str] = field(default_factory=Counter)  # email -> times applied
    rejected: Counter[str] = field(default_factory=Counter)  # email -> times refused (207 error or alone in a 400)
    reasons: dict[str, str] = field(default_factory=dict)  # email -> last refusal message
    rate_limited_after_first: int = 0
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # email -> the CRM's record
    admitted_at: list[float] = field(default_factory=list)  # monotonic times of requests inside the limits
    daily_used: int = 0
    paths: Counter[str] = field(default_factory=Counter)


class FakeHubSpot(LoopbackHttp):
    def __init__(self, config: FakeHubSpotConfig | None = None) -> None:
        self.config = config or FakeHubSpotConfig()
        self.stats = FakeHubSpotStats()
        self.lock = threading.Lock()
        self.window: deque[float] = deque()
        self.rng = random.Random(self.config.seed)  # noqa: S311  fault injection, not crypto
        self.next_id = 1000
        self._listen(type("Handler", (_Handler,), {"fake": self}))

    def new_day(self) -> None:
        """[LIMITS] midnight in the account's time zone: the daily budget is whole again."""
        with self.lock:
            self.stats.daily_used = 0

    # --- behaviour, under the lock --------------------------------------------------------------------

    def admit(self) -> tuple[str | None, float, int]:
        """[LIMITS] (policy hit or None, seconds until the rolling window frees a slot, remaining in it)."""
        now = time.monotonic()
        with self.lock:
            while self.window and self.window[0] <= now - self.config.window:
                self.window.popleft()
            if self.stats.daily_used >= self.config.daily_limit:
                return "DAILY", 0.0, max(0, self.config.limit - len(self.window))
            if len(self.window) >= self.config.limit:
                return "TEN_SECONDLY_ROLLING", self.window[0] + self.config.window - now, 0
            self.window.append(now)
            self.stats.daily_used += 1
            self.stats.admitted_at.append(now)
            return None, 0.0, self.config.limit - len(self.window)

    def limit_headers(self, remaining: int) -> dict[str, str]:
        """[HEADERS]"""
        return {"X-HubSpot-RateLimit-Daily": str(self.config.daily_limit),
                "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.config.daily_limit - self.stats.daily_used)),
                "X-HubSpot-RateLimit-Max": str(self.config.limit),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.config.window * 1000)),
                "X-HubSpot-RateLimit-Remaining": str(remaining)}

    def fault(self) -> str | None:
        with self.lock:
            self.stats.requests += 1
            if self.stats.requests <= self.config.fail_first:
                return "error"
            roll = self.rng.random()
        if roll < self.config.error_rate:
            return "error"
        if roll < self.config.error_rate + self.config.timeout_rate:
            return "hang"
        return None

    def problems(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """[VALID] why HubSpot refuses this input's values, in its per-property shape (empty: valid)."""
        found: list[dict[str, Any]] = []
        email = str(item["id"])
        if self.config.invalid(email.lower()):
            found.append({"isValid": False, "message": f"Email address {email} is invalid", "error": "INVALID_EMAIL",
                          "name": "email"})
        for name, value in item["properties"].items():
            spec = self.config.properties.get(name)
            if spec is None:
                found.append({"isValid": False, "message": f'Property "{name}" does not exist',
                              "error": "PROPERTY_DOESNT_EXIST", "name": name})
            elif value == "":
                continue  # clears the property
            elif spec["type"] == "enumeration":
                if value != value.strip():
                    found.append({"isValid": False, "message": f'"{value}" includes leading or trailing whitespace.',
                                  "error": "LEADING_TRAILING_WHITESPACE", "name": name})
                elif value not in spec["options"]:
                    found.append({"isValid": False, "message": f"{value} was not one of the allowed options: "
                                  f"[{', '.join(spec['options'])}]", "error": "INVALID_OPTION", "name": name})
            elif spec["type"] == "number":
                try:
                    float(value)
                except ValueError:
                    found.append({"isValid": False, "message": f"{value} is not a valid number",
                                  "error": "INVALID_DOUBLE", "name": name})
        return found

    def upsert(self, inputs: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        """[UPSERT] apply the valid inputs; [ERRORS] 207 by objectWriteTraceId when every input has a
        unique one (and multi_status is on), else one invalid input refuses the whole request (400)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        with self.lock:
            refused = {n: p for n, item in enumerate(inputs) if (p := self.problems(item))}
            traces = [item.get("objectWriteTraceId") for item in inputs]
            traced = all(isinstance(t, str) and t for t in traces) and len(set(traces)) == len(traces)
            if refused and not (traced and self.config.multi_status):
                problems = [p for ps in refused.values() for p in ps]
                if len(inputs) == 1:  # the refusal names one contact: count it as that contact's
                    email = str(inputs[0]["id"]).lower()
                    self.stats.rejected[email] += 1
                    self.stats.reasons[email] = f"Property values were not valid: {json.dumps(problems)}"
                return 400, {"status": "error", "category": "VALIDATION_ERROR", "correlationId": str(uuid.uuid4()),
                             "message": f"Property values were not valid: {json.dumps(problems)}"}
            results, errors = [], []
            for n, item in enumerate(inputs):
                email = str(item["id"]).lower()
                if n in refused:
                    message = f"Property values were not valid: {json.dumps(refused[n])}"
                    self.stats.rejected[email] += 1
                    self.stats.reasons[email] = message
                    errors.append({"status": "error", "category": "VALIDATION_ERROR", "message": message,
                                   "context": {"objectWriteTraceId": [item["objectWriteTraceId"]]}})
                    continue
                record = self.stats.records.get(email)
                new = record is None
                if record is None:
                    self.next_id += 1
                    record = {"id": str(self.next_id), "createdAt": stamp, "properties": {}}
                    self.stats.records[email] = record
                record["properties"].update(item["properties"], email=email)
                self.stats.upserts[email] += 1
                result = {"id": record["id"], "properties": dict(record["properties"]), "new": new,
                          "createdAt": record["createdAt"], "updatedAt": stamp, "archived": False}
                if item.get("objectWriteTraceId"):
                    result["objectWriteTraceId"] = item["objectWriteTraceId"]
                results.append(result)
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": stamp, "completedAt": stamp}
        if errors:
            body.update(errors=errors, numErrors=len(errors))
        return (207 if errors else 200), body


def _well_formed(raw: bytes) -> list[dict[str, Any]] | None:
    """[UPSERT] inputs[] of {id, idProperty: email, properties: {name: string}}, 1 to 100."""
    try:
        inputs = json.loads(raw)["inputs"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
        return None
    for item in inputs:
        if not (isinstance(item, dict) and item.get("idProperty") == "email" and isinstance(item.get("id"), str)
                and item["id"] and isinstance(item.get("properties"), dict)
                and all(isinstance(v, str) for v in item["properties"].values())):
            return None
    return inputs


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHubSpot
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  quiet
        return

    def _answer(self, status: int, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html" if isinstance(body, bytes) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        with self.fake.lock:
            self.fake.stats.statuses[status] += 1
            if status == 429 and self.fake.stats.statuses[429] > 1:
                self.fake.stats.rate_limited_after_first += 1

    def do_POST(self) -> None:  # noqa: N802
        fake = self.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        versioned = VERSIONED_PATH.match(self.path)
        version = versioned.group(1) if versioned else ("v3" if self.path == UPSERT_PATH else None)
        if version is None or version not in fake.config.versions:
            return self._answer(404, {"status": "error", "message": "Not found", "category": "OBJECT_NOT_FOUND",
                                      "correlationId": str(uuid.uuid4())})
        with fake.lock:
            fake.stats.paths[version] += 1
        if self.headers.get("Authorization") != f"Bearer {fake.config.token}":  # [ERRORS]
            return self._answer(401, {"status": "error", "category": "INVALID_AUTHENTICATION",
                                      "correlationId": str(uuid.uuid4()),
                                      "message": "Authentication credentials not found."})
        policy, _wait, remaining = fake.admit()
        limits = fake.limit_headers(remaining)
        if policy is not None:  # [LIMITS]
            with fake.lock:
                fake.stats.policies[policy] += 1
            which = "daily" if policy == "DAILY" else "ten secondly rolling"
            # No Retry-After: the documents name none; the interval header says how long a window is.
            return self._answer(429, {"status": "error", "message": f"You have reached your {which} limit.",
                                      "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()),
                                      "policyName": policy, "requestId": str(uuid.uuid4())}, limits)
        fault = fake.fault()
        if fault == "hang":
            time.sleep(fake.config.hang_seconds)
            return self._answer(fake.config.error_status, b"<html>timed out</html>", limits)
        if fault == "error":
            return self._answer(fake.config.error_status, b"<html>Bad Gateway</html>", limits)
        inputs = _well_formed(raw)
        if inputs is None:
            return self._answer(400, {"status": "error", "category": "VALIDATION_ERROR",
                                      "correlationId": str(uuid.uuid4()),
                                      "message": "Invalid input JSON: inputs[] of {id, idProperty: email, "
                                                 "properties: {name: string}}, 1 to 100"}, limits)
        status, body = fake.upsert(inputs)
        return self._answer(status, body, limits)
