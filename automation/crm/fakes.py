"""A loopback fake HubSpot for the contract tests and bench/crm_sync.py: a real HTTP server on
127.0.0.1 (http.server in a thread) implementing the contacts batch upsert's request and response
shapes, per-item errors (207), a sliding-window rate limit with 429 + Retry-After and the
X-HubSpot-RateLimit-* headers, random 500s and timeouts (the request hangs and is not applied).

It counts what it applied per email, so callers can check nothing was lost or sent twice.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"


@dataclass
class FakeHubSpotConfig:
    token: str = "fake-token"  # noqa: S105  a test double
    limit: int = 100  # requests per window
    window: float = 10.0  # seconds
    error_rate: float = 0.0  # share of requests answered 500 (nothing applied)
    timeout_rate: float = 0.0  # share of requests that hang for hang_seconds (nothing applied)
    hang_seconds: float = 2.0
    fail_first: int = 0  # the first N requests answer 500
    invalid: Callable[[str], bool] = lambda email: "invalid" in email  # per-item VALIDATION_ERROR
    seed: int = 7


@dataclass
class FakeHubSpotStats:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    upserts: Counter[str] = field(default_factory=Counter)  # email -> times applied
    rejected: Counter[str] = field(default_factory=Counter)  # email -> per-item errors returned
    rate_limited_after_first: int = 0
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # email -> the CRM's record
    admitted_at: list[float] = field(default_factory=list)  # monotonic times of requests inside the limit


class FakeHubSpot:
    def __init__(self, config: FakeHubSpotConfig | None = None) -> None:
        self.config = config or FakeHubSpotConfig()
        self.stats = FakeHubSpotStats()
        self.lock = threading.Lock()
        self.window: deque[float] = deque()
        self.rng = random.Random(self.config.seed)  # noqa: S311  fault injection, not crypto
        self.next_id = 1000
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeHubSpot:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- behaviour, under the lock --------------------------------------------------------------------

    def admit(self) -> tuple[bool, float, int]:
        """Sliding window: (allowed, seconds until a slot frees, remaining after this request)."""
        now = time.monotonic()
        with self.lock:
            while self.window and self.window[0] <= now - self.config.window:
                self.window.popleft()
            if len(self.window) >= self.config.limit:
                return False, self.window[0] + self.config.window - now, 0
            self.window.append(now)
            self.stats.admitted_at.append(now)
            return True, 0.0, self.config.limit - len(self.window)

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

    def upsert(self, inputs: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        results, errors = [], []
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        with self.lock:
            for item in inputs:
                email = str(item["id"]).lower()
                if self.config.invalid(email):
                    self.stats.rejected[email] += 1
                    errors.append({"status": "error", "category": "VALIDATION_ERROR",
                                   "message": f"Property values were not valid: email {email!r} is invalid",
                                   "context": {"ids": [item["id"]]}})
                    continue
                record = self.stats.records.get(email)
                if record is None:
                    self.next_id += 1
                    record = {"id": str(self.next_id), "createdAt": stamp, "properties": {}}
                    self.stats.records[email] = record
                record["properties"].update(item["properties"], email=email)
                self.stats.upserts[email] += 1
                results.append({"id": record["id"], "properties": dict(record["properties"]), "new": record[
                    "createdAt"] == stamp, "createdAt": record["createdAt"], "updatedAt": stamp, "archived": False})
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": stamp, "completedAt": stamp}
        if errors:
            body.update(errors=errors, numErrors=len(errors))
        return (207 if errors else 200), body


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHubSpot
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  quiet
        return

    def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
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
        if self.path != UPSERT_PATH:
            return self._answer(404, {"status": "error", "message": "not found"})
        if self.headers.get("Authorization") != f"Bearer {fake.config.token}":
            return self._answer(401, {"status": "error", "category": "INVALID_AUTHENTICATION",
                                      "message": "Authentication credentials not found."})
        allowed, wait, remaining = fake.admit()
        limits = {"X-HubSpot-RateLimit-Max": str(fake.config.limit),
                  "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(fake.config.window * 1000)),
                  "X-HubSpot-RateLimit-Remaining": str(remaining)}
        if not allowed:
            return self._answer(429, {"status": "error", "category": "RATE_LIMITS",
                                      "message": "You have reached your secondly limit."},
                                {**limits, "Retry-After": str(max(1, math.ceil(wait)))})
        fault = fake.fault()
        if fault == "hang":
            time.sleep(fake.config.hang_seconds)
            return self._answer(500, {"status": "error", "message": "timed out internally"}, limits)
        if fault == "error":
            return self._answer(500, {"status": "error", "category": "INTERNAL_ERROR",
                                      "message": "internal error"}, limits)
        try:
            inputs = json.loads(raw)["inputs"]
            assert isinstance(inputs, list)
            assert 1 <= len(inputs) <= 100
            assert all(i["idProperty"] == "email" and isinstance(i["properties"], dict) and i["id"] for i in inputs)
        except (ValueError, KeyError, TypeError, AssertionError):
            return self._answer(400, {"status": "error", "category": "VALIDATION_ERROR",
                                      "message": "Invalid input JSON: inputs[] of {id, idProperty: email, properties}, "
                                                 "1 to 100"}, limits)
        status, body = fake.upsert(inputs)
        return self._answer(status, body, limits)
