"""OpenTelemetry traces (issue 26): one trace per cause, from the API request to the SMTP reply.

Off unless configured by OpenTelemetry's own variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_TRACES_EXPORTER`, read in config/settings.py): then `setup()` (called by the WSGI app, the
worker and the scheduler) installs the SDK with a batching exporter and instruments Django,
psycopg, Redis and requests. Off, no SDK provider is installed and every helper here costs one
`_tracer is None` check.

How a cause is followed across RQ (docs/operations.md, "Following one slow email"):
- every job carries the W3C trace context of the code that enqueued it in `job.meta["otel"]`
  (TracingQueue, django-rq's queue class) and the worker runs it inside a span continuing that
  trace (`TracedJobs`);
- jobs that carry the work of many causes (the coalesced events job, delivery and CRM batches)
  are BATCH_JOBS: their span starts a trace of its own and only *links* to the enqueuer, and
  `batch()` links it to every cause it carries, never making one cause the parent of another's
  work. Work for one row inside a batch (a message's render and send) runs in `cause_span()`, a
  child of that row's cause; `batch()` also leaves a short span in each cause's trace, linked
  back to the batch, so the cause's trace shows when its batch ran;
- a row knows its cause by its correlation id (the Event's, copied to its Enrollment, StepRuns
  and Message, core/logs.py). With tracing on a request's correlation id *is* its trace id (unless
  the proxy sent an X-Request-ID, which is then recorded on the request's span), and
  `remember_cause()` keeps "correlation id -> trace context" in Redis for CAUSE_TTL so a worker can
  continue that trace. Redis may be flushed: a row whose cause is forgotten is traced under its
  batch instead; no work depends on it.

Attributes carry ids, counts and outcomes, never an address or a name (`hashed()` if one must be
told apart).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from django_rq.queues import DjangoRQ
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from rq.job import Job
    from rq.queue import Queue
    from rq.worker import BaseWorker

    _WorkerBase = BaseWorker
else:
    _WorkerBase = object

log = logging.getLogger(__name__)

META_KEY = "otel"  # job.meta key of the W3C carrier {"traceparent": ..., "tracestate": ...}
CAUSE_KEY = "leadflow:trace:cause:"  # + correlation id -> traceparent of the span that caused it
CAUSE_TTL = 6 * 3600  # seconds; longer than any queue should wait (the sweepers retry within minutes)
LOCAL_CAUSES = 10_000  # causes kept in this process (a worker's recent batches)
MAX_LINKS = 128  # per batch span: the SDK's default limit; the count of causes is an attribute
# Jobs whose one run serves many causes: their span links to the enqueuer instead of joining its
# trace (the first request's trace would otherwise hold everyone's events).
BATCH_JOBS = frozenset({
    "contacts.tasks_events.events_process_pending",
    "contacts.tasks_events.events_process",
    "campaigns.tasks.delivery_run_job",
    "automation.crm.tasks.crm_sync_run",
    "automation.tasks.enrollments_advance",
})
SERVICE_NAME = "leadflow"

_tracer: otel_trace.Tracer | None = None  # None: tracing is off
_provider: TracerProvider | None = None
_instrumentors: list[Any] = []
_causes: OrderedDict[str, SpanContext] = OrderedDict()
_propagator = propagate.get_global_textmap()


def enabled() -> bool:
    return _tracer is not None


# --- Setup -------------------------------------------------------------------------------------


def setup(process: str) -> bool:
    """Install the SDK when the settings turn tracing on (once per process); returns whether it did.
    Call before Django loads its middleware (config/wsgi.py): the Django instrumentation adds one."""
    from django.conf import settings

    if _tracer is not None or not settings.TRACING_ENABLED:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; the process role tells web from worker.
    attributes = {"leadflow.process": process}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = SERVICE_NAME
    provider = TracerProvider(resource=Resource.create(attributes))  # sampler: OTEL_TRACES_SAMPLER(_ARG)
    exporter: SpanExporter
    if settings.TRACING_EXPORTER == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT
    provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*: export off the hot path
    otel_trace.set_tracer_provider(provider)
    install(provider)
    log.info("tracing on", extra={"exporter": settings.TRACING_EXPORTER, "leadflow_process": process})
    return True


def install(provider: TracerProvider) -> None:
    """Use `provider` for our spans and the library instrumentations (tests pass one with an
    in-memory exporter; `uninstall()` undoes it)."""
    global _tracer, _provider
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    _provider = provider
    _tracer = provider.get_tracer("leadflow")
    # Probes and scrapes would be most of the traces and say nothing.
    excluded = os.environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", "healthz,readyz,metrics")
    django_options = {"excluded_urls": excluded, "request_hook": _redact_request}
    for instrumentor, options in ((DjangoInstrumentor(), django_options),
                                  (PsycopgInstrumentor(), {"skip_dep_check": True}),
                                  (RedisInstrumentor(), {}), (RequestsInstrumentor(), {})):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider, **options)
            _instrumentors.append(instrumentor)


_PATH_KEYS = ("http.target", "url.path")  # a path (http.target: with the query; RAW_URI under gunicorn)
_URL_KEYS = ("http.url", "url.full")  # a whole URL


def _redact_request(span: Any, request: Any) -> None:
    """Request spans carry the route, never the path nor the query string. Public links hold a
    bearer token in their path (/e/u/<token>: whoever reads a trace could unsubscribe the contact;
    /f/confirm/<token>: confirm an opt-in) and admin searches hold personal data in the query
    (`?q=` an address). Every path is replaced by its route pattern (deny by default: a new token
    route needs no list kept up to date): /e/u/<str:token>, /admin/contacts/contact/<path:object_id>/change/;
    an unresolved path keeps its first segment only (a mangled link may still hold a real token)."""
    if not span.is_recording():
        return
    path = request.path
    safe = path[:len(path) - len(request.path_info)] + _route_of(request.path_info)
    for key, value in dict(getattr(span, "attributes", None) or {}).items():
        if isinstance(value, (tuple, list)) and len(path) > 1 and path != safe:  # captured headers (a Referer)
            cleaned = [v.replace(quote(path), safe).replace(path, safe) if isinstance(v, str) else v for v in value]
            if cleaned != list(value):
                span.set_attribute(key, cleaned)
            continue
        if not isinstance(value, str):
            continue
        if key in _PATH_KEYS:
            clean = safe
        elif key == "url.query":
            clean = ""
        elif key in _URL_KEYS:
            clean = urlsplit(value)._replace(path=safe, query="", fragment="").geturl()
        elif len(path) > 1 and path != safe:  # any other string holding the path
            clean = value.replace(quote(path), safe).replace(path, safe)
        else:
            continue
        if clean != value:
            span.set_attribute(key, clean)


def _route_of(path_info: str) -> str:
    from django.urls import Resolver404, resolve

    try:
        route = resolve(path_info).route
    except Resolver404:
        route = ""
    if route:
        return "/" + route
    first, _, rest = path_info.lstrip("/").partition("/")
    return f"/{first}/…" if rest else f"/{first}"


def uninstall() -> None:
    global _tracer, _provider
    while _instrumentors:
        _instrumentors.pop().uninstrument()
    _tracer = _provider = None
    _causes.clear()


# --- Our spans ---------------------------------------------------------------------------------


_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()  # what every hook returns when tracing is off


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one for a logical step (a no-op when tracing is off)."""
    if _tracer is None:
        return _OFF
    return _tracer.start_as_current_span(name, attributes=_clean(attributes))


def set_attributes(**attributes: Any) -> None:
    if _tracer is None:
        return
    otel_trace.get_current_span().set_attributes(_clean(attributes))


def record_phase(name: str, seconds: float, **attributes: Any) -> None:
    """A phase that just ended after `seconds` (timed by its own clock), as a child of the current
    span: for long operations that already time their phases (imports, score recomputes)."""
    if _tracer is None:
        return
    end = time.time_ns()
    _tracer.start_span(name, start_time=end - int(seconds * 1e9), attributes=_clean(attributes)).end(end_time=end)


def hashed(value: str) -> str:
    """A value that tells two people apart without naming them (an address, lower-cased)."""
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()[:16]


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k if "." in k else f"leadflow.{k}": v for k, v in attributes.items() if v is not None}


def current_trace_id() -> str:
    """The current trace's id as 32 hex digits ("" without a sampled span): the correlation id."""
    if _tracer is None:
        return ""
    ctx = otel_trace.get_current_span().get_span_context()
    return otel_trace.format_trace_id(ctx.trace_id) if ctx.is_valid else ""


def log_ids() -> dict[str, str]:
    """trace_id and span_id for a log line (core/logs.py), or nothing."""
    if _tracer is None:
        return {}
    ctx = otel_trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": otel_trace.format_trace_id(ctx.trace_id), "span_id": otel_trace.format_span_id(ctx.span_id)}


# --- Causes: correlation id -> trace context ------------------------------------------------------


def remember_cause(correlation_id: str) -> None:
    """Rows created now carry `correlation_id`: keep the current span as their cause, so work on
    them in a worker continues this trace. Best effort: Redis errors only lose the link."""
    if _tracer is None or not correlation_id:
        return
    ctx = otel_trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return
    _keep_local(correlation_id, ctx)
    try:
        from core.queues import get_connection

        get_connection().set(CAUSE_KEY + correlation_id, _traceparent(ctx), ex=CAUSE_TTL)
    except Exception:  # noqa: BLE001  tracing must never fail the request
        log.debug("tracing: could not store the cause of %s", correlation_id, exc_info=True)


def cause_contexts(correlation_ids: Iterable[str]) -> dict[str, SpanContext]:
    """The trace contexts of these causes that are still known (this process first, then Redis)."""
    if _tracer is None:
        return {}
    wanted = {cid for cid in correlation_ids if cid}
    found = {cid: _causes[cid] for cid in wanted if cid in _causes}
    missing = sorted(wanted - found.keys())
    if missing:
        try:
            from core.queues import get_connection

            values = get_connection().mget([CAUSE_KEY + cid for cid in missing])
        except Exception:  # noqa: BLE001
            log.debug("tracing: could not read causes", exc_info=True)
            values = []
        for cid, value in zip(missing, values, strict=False):
            ctx = _parse_traceparent(value)
            if ctx is not None:
                found[cid] = ctx
                _keep_local(cid, ctx)
    return found


def _keep_local(correlation_id: str, ctx: SpanContext) -> None:
    _causes[correlation_id] = ctx
    _causes.move_to_end(correlation_id)
    while len(_causes) > LOCAL_CAUSES:
        _causes.popitem(last=False)


def _traceparent(ctx: SpanContext) -> str:
    return f"00-{otel_trace.format_trace_id(ctx.trace_id)}-{otel_trace.format_span_id(ctx.span_id)}-" \
           f"{int(ctx.trace_flags):02x}"


def _parse_traceparent(value: Any) -> SpanContext | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    span_ctx = otel_trace.get_current_span(_propagator.extract({"traceparent": value})).get_span_context()
    return span_ctx if span_ctx.is_valid else None


def batch(name: str, correlation_ids: Iterable[str], *, fan_in: bool = True,
          **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """Work on many causes' rows at once: a span linked to each cause, and (when it ends, unless
    `fan_in` is off because each row gets a `cause_span` anyway) a short span in each cause's own
    trace, linked back to it, saying when its rows were in this batch."""
    return _OFF if _tracer is None else _batch(name, correlation_ids, fan_in=fan_in, **attributes)


@contextlib.contextmanager
def _batch(name: str, correlation_ids: Iterable[str], *, fan_in: bool, **attributes: Any) -> Iterator[None]:
    assert _tracer is not None
    cids = list(dict.fromkeys(cid for cid in correlation_ids if cid))
    causes = cause_contexts(cids)
    links = [Link(ctx) for ctx in list(causes.values())[:MAX_LINKS]]
    started = time.time_ns()
    with _tracer.start_as_current_span(name, links=links, attributes=_clean(
            {**attributes, "causes": len(cids)})) as batch_span:
        yield
    back = [Link(batch_span.get_span_context())]
    for ctx in causes.values() if fan_in else ():
        _tracer.start_span(name, context=otel_trace.set_span_in_context(NonRecordingSpan(ctx)), links=back,
                           start_time=started, attributes={"leadflow.batch_causes": len(cids)}).end()


def causes_done(name: str, outcomes: Iterable[tuple[str, str]], **attributes: Any) -> None:
    """The end of a batch whose span is the current one, for (correlation id, outcome) pairs: the
    batch links to each cause, and each cause's trace gets a span from the batch's start to now,
    linked back, with its rows' outcomes counted (e.g. `leadflow.outcome.synced`)."""
    if _tracer is None:
        return
    current = otel_trace.get_current_span()
    by_cause: dict[str, dict[str, int]] = {}
    for cid, outcome in outcomes:
        if cid:
            counts = by_cause.setdefault(cid, {})
            key = str(outcome) or "none"
            counts[key] = counts.get(key, 0) + 1
    causes = cause_contexts(by_cause)
    for ctx in list(causes.values())[:MAX_LINKS]:
        current.add_link(ctx)
    back = [Link(current.get_span_context())]
    started = getattr(current, "start_time", None) or time.time_ns()
    for cid, ctx in causes.items():
        counts = {f"leadflow.outcome.{k}": v for k, v in by_cause[cid].items()}
        _tracer.start_span(name, context=otel_trace.set_span_in_context(NonRecordingSpan(ctx)), links=back,
                           start_time=started, attributes={**_clean(attributes), **counts}).end()


def cause_span(name: str, correlation_id: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """Work on one row inside a batch: a child of the row's cause (known from `batch()` or
    `cause_contexts()`), linked to the batch; a child of the current span when the cause is unknown."""
    return _OFF if _tracer is None else _cause_span(name, correlation_id, **attributes)


@contextlib.contextmanager
def _cause_span(name: str, correlation_id: str, **attributes: Any) -> Iterator[Any]:
    assert _tracer is not None
    cause = _causes.get(correlation_id) if correlation_id else None
    if cause is None:
        with _tracer.start_as_current_span(name, attributes=_clean(attributes)) as current:
            yield current
        return
    here = otel_trace.get_current_span().get_span_context()
    with _tracer.start_as_current_span(name, context=otel_trace.set_span_in_context(NonRecordingSpan(cause)),
                                       links=[Link(here)] if here.is_valid else [],
                                       attributes=_clean(attributes)) as current:
        yield current


# --- RQ: the trace context travels in the job's meta ------------------------------------------------


def with_context(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """`meta` plus the current trace context (unless it has one already)."""
    if _tracer is None or (meta and META_KEY in meta):
        return meta
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    if not carrier:
        return meta
    return {**(meta or {}), META_KEY: carrier}


class TracingQueue(DjangoRQ):
    """django-rq's queue (after-COMMIT enqueueing) that puts the enqueuer's trace context in each
    job's meta, captured when the job is enqueued, not when the transaction commits."""

    def enqueue_call(self, *args: Any, **kwargs: Any) -> Any:
        if _tracer is not None:
            kwargs["meta"] = with_context(kwargs.get("meta"))
        return super().enqueue_call(*args, **kwargs)

    def create_job(self, *args: Any, **kwargs: Any) -> Any:  # enqueue_at/in and enqueue_many come here
        if _tracer is not None:
            kwargs["meta"] = with_context(kwargs.get("meta"))
        return super().create_job(*args, **kwargs)


@contextlib.contextmanager
def job_span(job: Job, queue_name: str) -> Iterator[Any]:
    """Run a job inside a span continuing its enqueuer's trace (a batch job: linked to it)."""
    if _tracer is None:
        yield None
        return
    carrier = job.meta.get(META_KEY) if isinstance(job.meta, dict) else None
    parent = _propagator.extract(carrier) if isinstance(carrier, dict) else None
    parent_ctx = otel_trace.get_current_span(parent).get_span_context() if parent is not None else None
    is_batch = job.func_name in BATCH_JOBS
    links = [Link(parent_ctx)] if is_batch and parent_ctx is not None and parent_ctx.is_valid else []
    attributes = {"messaging.system": "rq", "messaging.destination.name": queue_name,
                  "messaging.message.id": job.id, "rq.job.func": job.func_name,
                  "leadflow.correlation_id": str(job.meta.get("correlation_id") or job.id)[:100]}
    # A batch job (or one without a carrier) starts a trace of its own; any other continues its enqueuer's.
    start_from = otel_context.Context() if is_batch or parent is None else parent
    with _tracer.start_as_current_span(f"rq {job.func_name}", context=start_from, kind=SpanKind.CONSUMER,
                                       links=links, attributes=attributes) as current:
        yield current


class TracedJobs(_WorkerBase):
    """Mixed into every worker class `manage.py worker` runs: each job runs inside `job_span`, in
    the process that runs it (in-process, or the forked work horse)."""

    def perform_job(self, job: Job, queue: Queue) -> bool:
        if _tracer is None:
            return super().perform_job(job, queue)
        with job_span(job, queue.name) as current:
            ok = super().perform_job(job, queue)
            if not ok:
                current.set_status(Status(StatusCode.ERROR, "job failed"))
        if self.is_horse and _provider is not None:
            _provider.force_flush()  # a forked work horse exits with os._exit: its batch would be lost
        return ok

