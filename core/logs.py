"""Structured logs: one JSON object per line, with the correlation id of the request or job that
wrote it, so one event can be followed through web, workers and the rows they touch.

The id comes from the `X-Request-ID` header (or a new one) for requests, and from the RQ job for
jobs (the job's `correlation_id` meta when its enqueuer set one, else the job id). Code that acts
on rows logs their ids as `extra` fields (event_id, enrollment_id, message_id, crm_item_id): with
the correlation id they chain an event to the messages and CRM rows it caused.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "correlation_id"}


class CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id.get() or _job_correlation_id()
        return True


def _job_correlation_id() -> str:
    try:
        from rq import get_current_job

        job = get_current_job()
    except Exception:  # noqa: BLE001  outside a worker there is no job
        return ""
    if job is None:
        return ""
    return str(job.meta.get("correlation_id") or job.id)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        if getattr(record, "correlation_id", ""):
            entry["correlation_id"] = record.correlation_id  # type: ignore[attr-defined]
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


JsonFormatter.converter = __import__("time").gmtime  # timestamps in UTC, marked Z


class CorrelationIdMiddleware:
    """Takes a well-formed X-Request-ID from the proxy or makes one; echoes it on the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        value = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        token = correlation_id.set(value)
        try:
            response = self.get_response(request)
        finally:
            correlation_id.reset(token)
        response["X-Request-ID"] = value
        return response
