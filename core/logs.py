"""Structured logs: one JSON object per line, with the correlation id of the request or job that
wrote it, so one event can be followed through web, workers and the rows they touch.

The id comes from the `X-Request-ID` header (or a new one: the trace id when tracing is on,
core/tracing.py) for requests, and from the RQ job for jobs (the job's `correlation_id` meta when
its enqueuer set one, else the job id). With tracing on every line also carries `trace_id` and
`span_id`, so a line leads to its trace and a trace to its lines.

The id also travels with the rows (docs/architecture.md, "Following one event"): an Event stores
the id of the request or job that created it, the Enrollment it triggers copies the event's, the
StepRuns and the Message of that enrollment copy the enrollment's, and a CrmSyncItem takes the
id of the change that last queued it. Workers therefore log a row with *its* id, not the job's:

- per-row work runs inside `correlation_scope(row.correlation_id)`, so every line it writes (and
  every row it creates through `current_correlation_id()`) carries the row's id;
- a line about a batch of rows passes `rows_extra("message_ids", pairs)`: when the rows share one
  id it becomes the line's `correlation_id`; when they do not, the line keeps the job's id and
  lists the row ids under each of theirs (`correlation_ids`), rather than inventing a single one;
- the event pipeline names, per contact, the id of the event that caused the work at hand
  (`contact_causes`), so rows written for a contact deep inside scoring or segment code (a CRM
  sync queued by a score change) take that event's id.

Code that acts on rows logs their ids as `extra` fields (event_ids, enrollment_ids, message_ids,
crm_item_ids); grep the logs, or search the admin (exact match) for the id.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django.http import HttpRequest, HttpResponse

from core import tracing

correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="")
# contact id -> the correlation id of the change being processed for it (set by the event pipeline)
_contact_causes: contextvars.ContextVar[Mapping[int, str] | None] = contextvars.ContextVar(
    "contact_causes", default=None)

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "correlation_id"}
MAX_IDS_PER_GROUP = 100  # row ids listed per correlation id in one line; the column finds the rest


class CorrelationFilter(logging.Filter):
    """The line's correlation id: one given as `extra` (a line about one row, or rows sharing one
    id), else the request's or per-row scope's, else the job's."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "correlation_id", ""):
            record.correlation_id = current_correlation_id()
        if tracing.enabled():
            record.__dict__.update(tracing.log_ids())
        return True


def current_correlation_id() -> str:
    """The id new rows and log lines get here: the request's or current row's, else the job's ("")."""
    return correlation_id.get() or _job_correlation_id()


def _job_correlation_id() -> str:
    try:
        from rq import get_current_job

        job = get_current_job()
    except Exception:  # noqa: BLE001  outside a worker there is no job
        return ""
    if job is None:
        return ""
    return str(job.meta.get("correlation_id") or job.id)[:100]  # the rows' column holds 100


@contextmanager
def correlation_scope(value: str) -> Iterator[None]:
    """Work on one row: its lines and the rows it creates carry `value` ("": leave the id as is)."""
    if not value:
        yield
        return
    token = correlation_id.set(value)
    try:
        yield
    finally:
        correlation_id.reset(token)


@contextmanager
def contact_causes(causes: Mapping[int, str]) -> Iterator[None]:
    """Batch work for many contacts: `causes` maps a contact id to the correlation id of the change
    (the event) being processed for it; `correlation_for_contact` reads it."""
    token = _contact_causes.set(causes)
    try:
        yield
    finally:
        _contact_causes.reset(token)


def correlation_for_contact(contact_id: int) -> str:
    """The id of the change being processed for this contact, else the current one."""
    causes = _contact_causes.get()
    return (causes.get(contact_id) if causes else None) or current_correlation_id()


def rows_extra(key: str, rows: Iterable[tuple[int, str]]) -> dict[str, Any]:
    """Log extras for a line about rows, given (row id, correlation id) pairs: `key` lists the ids;
    one shared correlation id becomes the line's own; mixed ones are listed as
    `correlation_ids` {id: [row ids]} and the line keeps the request's or job's id."""
    groups: dict[str, list[int]] = {}
    for pk, cid in rows:
        groups.setdefault(cid or "", []).append(pk)
    ids = [pk for group in groups.values() for pk in group]
    extra: dict[str, Any] = {key: ids[:MAX_IDS_PER_GROUP]}
    if len(groups) == 1 and "" not in groups:
        extra["correlation_id"] = next(iter(groups))
    elif groups:
        extra["correlation_ids"] = {cid: group[:MAX_IDS_PER_GROUP] for cid, group in groups.items()}
    return extra


def _json_value(value: Any) -> Any:
    """Scalars, and lists/dicts of them (row ids by correlation id), as JSON; anything else its repr."""
    if isinstance(value, str | int | float | bool | type(None)):
        return value
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return repr(value)


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
                entry[key] = _json_value(value)
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
        # Tracing on: the request's id is its trace id; a proxy's id is kept and noted on the span.
        value = given if _SAFE_ID.match(given) else (tracing.current_trace_id() or uuid.uuid4().hex)
        tracing.set_attributes(**{"leadflow.correlation_id": value})
        token = correlation_id.set(value)
        try:
            response = self.get_response(request)
        finally:
            correlation_id.reset(token)
        response["X-Request-ID"] = value
        return response
