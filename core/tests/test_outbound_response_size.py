"""Outbound answers are read up to OUTBOUND_MAX_RESPONSE_BYTES (core/outbound.py): an endpoint that
streams far more fails the call with response_too_large (its status kept) after about the limit has
been read, and the CRM connectors treat that like other failed answers (retried)."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from automation.crm.connectors.base import Fate, OutItem
from automation.crm.connectors.hubspot import HubSpotConnector
from core import outbound
from core.testing.loopback import LoopbackHttp

LIMIT = 1024 * 1024
FLOOD = 64 * 1024 * 1024  # what the hostile endpoint tries to send: 64 times the limit
CHUNK = b"x" * 65536


class Flooding(LoopbackHttp):
    """Answers every request with `status` and a body of FLOOD bytes, counting what it got to write
    before the client hung up. `declare`: send Content-Length; `gzip_bomb`: FLOOD zeros, gzipped."""

    def __init__(self, *, status: int = 200, declare: bool = False, gzip_bomb: bool = False) -> None:
        self.written = 0
        self.done = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes

            def do_POST(self) -> None:  # noqa: N802  http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if gzip_bomb:
                    body = gzip.compress(b"\0" * FLOOD)
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    fake.done.set()
                    return
                if declare:
                    self.send_header("Content-Length", str(FLOOD))
                self.end_headers()
                try:
                    while fake.written < FLOOD:
                        self.wfile.write(CHUNK)
                        fake.written += len(CHUNK)
                except OSError:
                    pass  # the client hung up: what we are testing
                fake.done.set()

            def log_message(self, *args: Any) -> None:
                pass

        self._listen(Handler)


@pytest.fixture
def limit(settings: Any) -> int:
    settings.OUTBOUND_MAX_RESPONSE_BYTES = LIMIT
    return LIMIT


def _flood(**kwargs: Any) -> Iterator[Flooding]:
    server = Flooding(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def flooding() -> Iterator[Flooding]:
    yield from _flood()


def test_a_body_past_the_limit_fails_the_call_naming_the_limit_and_is_not_read_on(
        limit: int, flooding: Flooding) -> None:
    with pytest.raises(outbound.ResponseTooLarge) as failed:
        outbound.post(flooding.url, data=b"{}", headers={}, timeout=10)

    assert failed.value.code == "response_too_large"
    assert failed.value.status == 200
    assert f"OUTBOUND_MAX_RESPONSE_BYTES ({LIMIT} bytes)" in str(failed.value)
    assert flooding.done.wait(10)
    # The client hung up soon after the limit: socket buffers hold a few MiB at most, not the flood.
    assert flooding.written < FLOOD // 4


def test_a_declared_length_past_the_limit_is_refused_before_reading(limit: int) -> None:
    for server in _flood(status=500, declare=True):
        with pytest.raises(outbound.ResponseTooLarge) as failed:
            outbound.post(server.url, data=b"{}", headers={}, timeout=10)
        assert failed.value.status == 500
        assert server.done.wait(10)
        assert server.written < FLOOD // 4


def test_a_small_body_compressing_to_past_the_limit_counts_in_full(limit: int) -> None:
    for server in _flood(gzip_bomb=True):
        with pytest.raises(outbound.ResponseTooLarge):
            outbound.post(server.url, data=b"{}", headers={}, timeout=10)


def test_answers_within_the_limit_read_as_before(limit: int) -> None:
    class Small(LoopbackHttp):
        def __init__(self) -> None:
            class Handler(BaseHTTPRequestHandler):
                def do_POST(self) -> None:  # noqa: N802
                    body = b'{"ok": true}'
                    self.send_response(201)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, *args: Any) -> None:
                    pass

            self._listen(Handler)

    server = Small().start()
    try:
        with outbound.session() as http:
            first = http.post(server.url, data=b"{}", timeout=10)
            second = http.post(server.url, data=b"{}", timeout=10)  # the kept-alive connection still works
    finally:
        server.stop()
    assert (first.status_code, first.json(), second.json()) == (201, {"ok": True}, {"ok": True})


def test_a_crm_answering_a_flood_is_a_retryable_failure_with_its_status(limit: int, flooding: Flooding) -> None:
    connector = HubSpotConnector(base_url=flooding.url, token="t", timeout=10)
    result = connector.send([OutItem(contact_id=1, email="ann@example.com", properties={})])
    assert result.fate == Fate.RETRYABLE
    assert result.http_status == 200
    assert result.message.startswith("response_too_large: 127.0.0.1 answered 200 OK")


@pytest.mark.django_db
def test_a_webhook_answered_with_a_flood_is_retried_later_with_the_reason(limit: int, flooding: Flooding) -> None:
    from django.utils import timezone

    from automation import engine
    from automation.models import DeliveryStatus, WebhookDelivery

    row = WebhookDelivery.objects.create(channel=WebhookDelivery.Channel.WEBHOOK, target=flooding.url + "/hook",
                                         payload={"event": "signed_up"}, idempotency_key="flood:1",
                                         next_attempt_at=timezone.now())
    assert engine.webhook_deliver(delivery_id=row.pk) == DeliveryStatus.PENDING  # backed off, like a timeout
    row.refresh_from_db()
    assert row.attempts == 1
    assert "response_too_large" in row.last_error
    assert f"OUTBOUND_MAX_RESPONSE_BYTES ({LIMIT} bytes)" in row.last_error
