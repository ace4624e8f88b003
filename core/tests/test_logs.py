"""Structured logs carry the correlation id of the request (or job) that wrote them."""

from __future__ import annotations

import json
import logging

from django.test import Client

from core.logs import CorrelationFilter, JsonFormatter, correlation_id


def test_a_request_keeps_a_well_formed_request_id_and_replaces_a_bad_one():
    client = Client()
    assert client.get("/healthz", headers={"X-Request-ID": "lb-42.abc"})["X-Request-ID"] == "lb-42.abc"
    replaced = client.get("/healthz", headers={"X-Request-ID": "bad id\nInjected: 1"})["X-Request-ID"]
    assert replaced != "bad id\nInjected: 1"
    assert len(replaced) == 32


def test_json_lines_carry_the_correlation_id_and_extra_fields():
    record = logging.LogRecord("campaigns.delivery", logging.WARNING, __file__, 1, "batch %s done", ("7",), None)
    record.message_id = 123
    record.sender = object()
    token = correlation_id.set("req-1")
    try:
        CorrelationFilter().filter(record)
    finally:
        correlation_id.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "batch 7 done"
    assert line["level"] == "WARNING"
    assert line["correlation_id"] == "req-1"
    assert line["message_id"] == 123
    assert line["sender"].startswith("<object")  # not serialisable: its repr, never a crash
    assert line["ts"].endswith("Z")
