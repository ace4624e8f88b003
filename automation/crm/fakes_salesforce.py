"""A loopback fake Salesforce for the contract tests: a real HTTP server on 127.0.0.1 answering the
OAuth token endpoint and the sObject Collections upsert as Salesforce documents them.

Sources (each behaviour below names the one it follows):
[TOKEN]   "OAuth 2.0 Client Credentials Flow for Server-to-Server Integration" (Salesforce Help) and the
          Connect REST API quick start "Connect Using OAuth": POST /services/oauth2/token with
          grant_type=client_credentials, client_id, client_secret (form-encoded); answer
          {"access_token", "signature", "instance_url", "id", "token_type": "Bearer", "issued_at" (ms)};
          refused credentials answer 400 {"error": "invalid_client", "error_description"}. The token
          carries no expires_in: it lasts the org's session timeout (a knob here, `session_seconds`).
[UPSERT]  REST API Developer Guide, "Upsert Records Using sObject Collections"
          (developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-
          upsert.html): PATCH /services/data/vXX.X/composite/sobjects/<SobjectName>/<ExternalIdFieldName>,
          body {"allOrNone": false, "records": [{"attributes": {"type": <SobjectName>}, ...}]}, up to 200
          records of the URI's type, API version 46 and later; a request that is not well formed answers
          400; a well-formed one answers 200 with one UpsertResult per record, in order:
          {"id", "success", "errors": [{"statusCode", "message", "fields"}], "created"}.
[ERRORS]  REST API Developer Guide, "Status Codes and Error Responses": errors as
          [{"message", "errorCode"}]; 401 INVALID_SESSION_ID "Session expired or invalid"; 403
          REQUEST_LIMIT_EXCEEDED when the org's API request limit is exceeded; 400 INVALID_FIELD for a
          field the object does not have. Per-record picklist refusals:
          INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST ("bad value for restricted picklist field").
[LIMITS]  REST API Developer Guide, "Limit Info Header": every response carries
          `Sforce-Limit-Info: api-usage=<used>/<limit>` (the org's API requests in the last 24 hours).
[LEAD]    Object Reference, Lead: Status is a picklist (the default values "Open - Not Contacted",
          "Working - Contacted", "Closed - Converted", "Closed - Not Converted"); Email, FirstName,
          LastName, Company, Title, Phone, Country fields.

Not from the documents (test knobs): `error_rate` 5xx, `daily_limit` small enough to reach,
`expire_tokens()`. The fake counts what it applied per external id.
"""

from __future__ import annotations

import json
import random
import re
import secrets
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from core.testing.loopback import LoopbackHttp

TOKEN_PATH = "/services/oauth2/token"  # noqa: S105  [TOKEN] a path, not a secret
UPSERT_PATH = re.compile(r"^/services/data/v(\d+)\.(\d)/composite/sobjects/(\w+)/(\w+)$")  # [UPSERT]
MAX_RECORDS = 200  # [UPSERT]
LEAD_STATUSES = ["Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted"]


def default_fields() -> dict[str, dict[str, Any]]:
    """[LEAD] the Lead fields Leadflow maps, plus the custom ones the tests use."""
    fields: dict[str, dict[str, Any]] = {name: {"type": "string"} for name in (
        "Email", "FirstName", "LastName", "Company", "Title", "Phone", "Country", "Leadflow_Email__c",
        "Lead_Grade__c", "Lifecycle_Stage__c")}
    fields["Lead_Score__c"] = {"type": "number"}
    fields["Status"] = {"type": "picklist", "values": list(LEAD_STATUSES)}
    return fields


@dataclass
class FakeSalesforceConfig:
    client_id: str = "fake-client-id"
    client_secret: str = "fake-client-secret"  # noqa: S105  a test double
    session_seconds: float = 7200.0  # the org's session timeout
    daily_limit: int = 100_000  # [LIMITS] requests per rolling 24 hours
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {"Lead": default_fields(),
                                                                                   "Contact": default_fields()})
    error_rate: float = 0.0
    error_status: int = 503
    seed: int = 7


@dataclass
class FakeSalesforceStats:
    token_requests: int = 0
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    error_codes: Counter[str] = field(default_factory=Counter)
    upserts: Counter[str] = field(default_factory=Counter)  # external id -> times applied
    rejected: Counter[str] = field(default_factory=Counter)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # external id -> record
    api_used: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    requested_at: list[float] = field(default_factory=list)  # monotonic times of authorized upsert requests


class FakeSalesforce(LoopbackHttp):
    def __init__(self, config: FakeSalesforceConfig | None = None) -> None:
        self.config = config or FakeSalesforceConfig()
        self.stats = FakeSalesforceStats()
        self.lock = threading.Lock()
        self.tokens: dict[str, float] = {}  # access token -> monotonic expiry
        self.rng = random.Random(self.config.seed)  # noqa: S311  fault injection, not crypto
        self.next_id = 1000
        self._listen(type("Handler", (_Handler,), {"fake": self}))

    def expire_tokens(self) -> None:
        """The org's session timeout passed (or an admin revoked the sessions)."""
        with self.lock:
            self.tokens.clear()

    def limit_header(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self.stats.api_used}/{self.config.daily_limit}"}  # [LIMITS]

    def issue(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """[TOKEN]"""
        get = {k: v[0] for k, v in form.items() if v}
        with self.lock:
            self.stats.token_requests += 1
            if get.get("grant_type") != "client_credentials":
                return 400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"}
            if get.get("client_id") != self.config.client_id or get.get("client_secret") != self.config.client_secret:
                return 400, {"error": "invalid_client", "error_description": "invalid client credentials"}
            token = "00D" + secrets.token_hex(16)
            self.tokens[token] = time.monotonic() + self.config.session_seconds
        return 200, {"access_token": token, "signature": secrets.token_urlsafe(24), "instance_url": self.url,
                     "id": f"{self.url}/id/00D000000000001/005000000000001", "token_type": "Bearer",
                     "issued_at": str(int(time.time() * 1000))}

    def authorized(self, header: str | None) -> bool:
        token = (header or "").removeprefix("Bearer ")
        with self.lock:
            expiry = self.tokens.get(token)
            return expiry is not None and expiry > time.monotonic()

    def upsert(self, sobject: str, external_field: str, body: Any) -> tuple[int, Any]:
        """[UPSERT] apply each record on its own (allOrNone false), results in request order."""
        fields = self.config.objects.get(sobject)
        if fields is None:
            return 404, [{"errorCode": "NOT_FOUND", "message": f"The requested resource does not exist: {sobject}"}]
        if external_field not in fields:
            return 404, [{"errorCode": "NOT_FOUND", "message": f"Provided external ID field does not exist or is "
                          f"not accessible: {external_field}"}]
        records = body.get("records") if isinstance(body, dict) else None
        if (not isinstance(records, list) or not 1 <= len(records) <= MAX_RECORDS or body.get("allOrNone", False)
                or not all(isinstance(r, dict) and (r.get("attributes") or {}).get("type") == sobject
                           and isinstance(r.get(external_field), str) and r[external_field] for r in records)):
            return 400, [{"errorCode": "JSON_PARSER_ERROR", "message": "records: 1 to 200 objects of the URI's type "
                          "with attributes.type and the external id (allOrNone false here)"}]
        unknown = sorted({k for r in records for k in r if k != "attributes" and k not in fields})
        if unknown:  # [ERRORS] the whole request
            return 400, [{"errorCode": "INVALID_FIELD", "message": f"No such column '{unknown[0]}' on sobject of "
                          f"type {sobject}"}]
        results: list[dict[str, Any]] = []
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime())
        with self.lock:
            self.stats.batch_sizes.append(len(records))
            for record in records:
                key = record[external_field].lower()
                errors = []
                for name, value in record.items():
                    spec = fields.get(name) or {}
                    if spec.get("type") == "picklist" and value not in (None, "") and value not in spec["values"]:
                        errors.append({"statusCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                       "message": f"{name}: bad value for restricted picklist field: {value}",
                                       "fields": [name]})
                if errors:
                    self.stats.rejected[key] += 1
                    results.append({"success": False, "errors": errors})
                    continue
                current = self.stats.records.get(key)
                created = current is None
                if current is None:
                    self.next_id += 1
                    current = {"Id": f"00Q{self.next_id:012d}", "CreatedDate": stamp}
                    self.stats.records[key] = current
                current.update({k: v for k, v in record.items() if k != "attributes"})
                self.stats.upserts[key] += 1
                results.append({"id": current["Id"], "success": True, "errors": [], "created": created})
        return 200, results


class _Handler(BaseHTTPRequestHandler):
    fake: FakeSalesforce
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  quiet
        return

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        with self.fake.lock:
            self.fake.stats.statuses[status] += 1
            if isinstance(body, list) and body and isinstance(body[0], dict) and "errorCode" in body[0]:
                self.fake.stats.error_codes[body[0]["errorCode"]] += 1

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != TOKEN_PATH:
            return self._answer(404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])
        status, body = self.fake.issue(urllib.parse.parse_qs(raw.decode("utf-8", "replace")))
        return self._answer(status, body)

    def do_PATCH(self) -> None:  # noqa: N802
        fake = self.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = UPSERT_PATH.match(self.path)
        if match is None or int(match.group(1)) < 46:  # [UPSERT] API version 46 and later
            return self._answer(404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])
        if not fake.authorized(self.headers.get("Authorization")):  # [ERRORS]
            return self._answer(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
        with fake.lock:
            fake.stats.requests += 1
            fake.stats.requested_at.append(time.monotonic())
            over = fake.stats.api_used >= fake.config.daily_limit
            if not over:
                fake.stats.api_used += 1
            roll = fake.rng.random()
        if over:  # [ERRORS] + [LIMITS]
            return self._answer(403, [{"message": f"TotalRequests Limit exceeded. ({fake.config.daily_limit})",
                                       "errorCode": "REQUEST_LIMIT_EXCEEDED"}], fake.limit_header())
        if roll < fake.config.error_rate:
            return self._answer(fake.config.error_status, [{"errorCode": "SERVER_UNAVAILABLE",
                                                            "message": "Server temporarily unavailable"}],
                                fake.limit_header())
        try:
            body = json.loads(raw)
        except ValueError:
            return self._answer(400, [{"errorCode": "JSON_PARSER_ERROR", "message": "Unexpected character"}],
                                fake.limit_header())
        status, answer = fake.upsert(match.group(3), match.group(4), body)
        return self._answer(status, answer, fake.limit_header())
