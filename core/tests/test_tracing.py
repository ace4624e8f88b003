"""Traces (issue 26): an API call is one trace from the request to the SMTP reply and the CRM
answer, across real RQ jobs run by our worker class; batches link the traces of what they carry
and parent none of them; a SIGKILLed worker's retry is a new span in the same trace; no attribute
carries an address. Spans are collected by the SDK's in-memory exporter (and, from a worker
process, by a loopback OTLP receiver: core/testing/otlp_sink.py)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections
from django.test import Client
from django.utils import timezone
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from automation.crm.fakes import FakeHubSpot
from automation.crm.models import CrmConnection, CrmSyncItem, SyncStatus
from automation.crm.services import throttle_for
from automation.crm.vault import encrypt
from automation.services import workflow_import, workflow_promote
from campaigns.delivery import delivery_run, delivery_sweep
from campaigns.models import Message, MessageStatus
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact, make_template
from conftest import make_user
from contacts.apikeys import api_key_create
from contacts.models import Event
from core import tracing
from core.logs import CorrelationFilter, JsonFormatter, correlation_scope
from core.management.commands.worker import InProcessWorker
from core.queues import get_connection, get_queue
from core.testing.otlp_sink import OtlpSink
from core.testing.workers import kill_when, worker_process

ROOT = Path(__file__).resolve().parents[2]

WORKFLOW = """\
templates:
  - key: welcome
    kind: transactional
    subject: "Welcome, {{ contact.first_name|default:'there' }}"
    html: "<p>Hello {{ contact.email }}</p>"
workflows:
  - key: welcome
    name: Welcome
    trigger: {type: event, event: signed_up}
    steps:
      - {id: hello, type: send_email, template: welcome}
      - {id: sync, type: crm_sync}
"""


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for this test, every finished span kept in memory (off again afterwards)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    connections.close_all()  # connections opened from here on are instrumented (psycopg wraps connect)
    yield exporter
    tracing.uninstall()
    connections.close_all()
    provider.shutdown()


@pytest.fixture
def hubspot() -> Iterator[FakeHubSpot]:
    fake = FakeHubSpot().start()
    yield fake
    fake.stop()


class Captured(logging.Handler):
    """The JSON lines the production handler would write (same filter, same formatter)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.addFilter(CorrelationFilter())
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler, root = Captured(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def hex_trace(span: ReadableSpan) -> str:
    return otel_trace.format_trace_id(span.context.trace_id)


def run_worker() -> None:
    """Our worker class (the one `manage.py worker` runs), in this process, until the queues are empty."""
    queues = [get_queue(name) for name in ("events", "default", "delivery", "crm")]
    for _ in range(10):
        InProcessWorker(queues, connection=queues[0].connection).work(burst=True)
        if not any(queue.count for queue in queues):
            return
    raise AssertionError("the queues did not drain")


def in_trace(finished: Sequence[ReadableSpan], trace_id: str) -> list[ReadableSpan]:
    return [s for s in finished if hex_trace(s) == trace_id]


def assert_connected(trace: list[ReadableSpan]) -> None:
    """One root, and every other span's parent is a span of the same trace."""
    ids = {s.context.span_id for s in trace}
    roots = [s for s in trace if s.parent is None]
    assert len(roots) == 1, [s.name for s in roots]
    orphans = [s.name for s in trace if s.parent is not None and s.parent.span_id not in ids]
    assert not orphans, orphans


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def strings_in(span: ReadableSpan) -> list[str]:
    values = [*attrs(span).values(), *(v for e in span.events for v in (e.attributes or {}).values())]
    return [str(v) for v in values]


@pytest.mark.django_db(transaction=True)
def test_an_api_call_is_one_trace_to_the_smtp_reply_and_the_crm_answer(
        spans: InMemorySpanExporter, sender: Any, sink: Any, hubspot: FakeHubSpot, captured: Captured) -> None:
    get_connection().flushdb()
    # given a production workflow that emails and syncs to the CRM
    version = workflow_import(text=WORKFLOW, actor="test", to="staging").versions[0]
    workflow_promote(workflow=version.workflow, actor="test")
    conn = CrmConnection.objects.create(name="hubspot", kind=CrmConnection.Kind.HUBSPOT, base_url=hubspot.url,
                                        field_mapping={"first_name": "firstname"}, rate_limit="1000/s",
                                        token_encrypted=encrypt("fake-token"))
    throttle_for(conn).reset()
    _, raw = api_key_create(name="website")

    # when two API calls (no X-Request-ID) post a signup each, before any worker runs
    trace_ids = {}
    for email in ("ann@example.com", "bob@example.com"):
        response = Client().post("/api/v1/events", {"events": [{"email": email, "type": "signed_up"}]},
                                 content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert response.status_code == 202, response.content
        trace_ids[email] = response["X-Request-ID"]
    # and our worker runs the jobs that follow (one events job carries both signups)
    run_worker()

    finished = spans.get_finished_spans()
    for email, trace_id in trace_ids.items():
        # then the request's id is its trace id, and the rows it caused carry it
        event = Event.objects.get(contact__email=email)
        message = Message.objects.get(contact__email=email)
        item = CrmSyncItem.objects.get(contact__email=email)
        assert len(trace_id) == 32
        assert (event.correlation_id, message.correlation_id, item.correlation_id) == (trace_id,) * 3
        assert (message.status, item.status) == (MessageStatus.SENT, SyncStatus.SYNCED)
        # and that trace holds the request, its events' batch, the message's render and send
        # (with the SMTP reply code) and the CRM answer, all connected to the request's span
        trace = in_trace(finished, trace_id)
        assert_connected(trace)
        names = [s.name for s in trace]
        for expected in ("api.events", "events.batch", "workflow.advance", "message.render", "message.send",
                         "crm.sync"):
            assert expected in names, (expected, names)
        root = next(s for s in trace if s.parent is None)
        assert root.kind == otel_trace.SpanKind.SERVER
        assert attrs(root)["leadflow.correlation_id"] == trace_id
        # with the instrumented libraries' spans under ours (Redis everywhere, PostgreSQL when it is the database)
        systems = {attrs(s).get("db.system") or attrs(s).get("db.system.name") for s in trace}
        assert "redis" in systems
        assert connection.vendor != "postgresql" or "postgresql" in systems
        send = next(s for s in trace if s.name == "message.send")
        assert attrs(send)["smtp.reply_code"] == 250
        assert attrs(send)["leadflow.outcome"] == "sent"
        assert attrs(send)["leadflow.message_id"] == message.pk
        crm = next(s for s in trace if s.name == "crm.sync")
        assert attrs(crm)["leadflow.outcome.synced"] == 1
        # and the log line that accepted the event names the trace as its correlation id and trace id
        accepted = [line for line in captured.lines if line["message"] == "events accepted"
                    and line.get("correlation_id") == trace_id]
        assert accepted
        assert accepted[0]["trace_id"] == trace_id

    # and the batches that carried both signups are traces of their own, linked to each request,
    # parenting neither (no span of one request's trace hangs under the other's)
    for name in ("events.batch", "delivery.batch", "crm.batch"):
        batches = [s for s in finished if s.name == name and hex_trace(s) not in trace_ids.values()]
        assert batches, name
        linked = {otel_trace.format_trace_id(link.context.trace_id) for s in batches for link in s.links}
        assert set(trace_ids.values()) <= linked, name
    job = next(s for s in finished if s.name == "rq contacts.tasks_events.events_process_pending")
    assert job.kind == otel_trace.SpanKind.CONSUMER
    assert hex_trace(job) not in trace_ids.values()

    # and no attribute of any span names either person, not even an admin's search for one
    admin = Client()
    admin.force_login(make_user("root", None, superuser=True))
    assert admin.get("/admin/contacts/contact/", {"q": "ann@example.com"}).status_code == 200
    finished = spans.get_finished_spans()
    assert any(s.kind == otel_trace.SpanKind.SERVER and "/admin/contacts/contact/" in str(s.attributes)
               for s in finished)
    for span in finished:
        for value in strings_in(span):
            assert "example.com" not in value, (span.name, value)  # plain or URL-encoded (%40)


@pytest.mark.django_db(transaction=True)
def test_a_job_continues_the_trace_of_the_code_that_enqueued_it(spans: InMemorySpanExporter) -> None:
    get_connection().flushdb()
    tracer = otel_trace.get_tracer("test", tracer_provider=tracing._provider)
    # given a job enqueued inside a span
    with tracer.start_as_current_span("admin action") as parent:
        job = get_queue("default").enqueue("core.tasks.heartbeat")
    assert job.meta[tracing.META_KEY]["traceparent"].split("-")[1] == hex_trace(parent)  # type: ignore[arg-type]
    # when our worker runs it
    run_worker()
    # then its span is a child of that span, in the same trace
    ran = next(s for s in spans.get_finished_spans() if s.name == "rq core.tasks.heartbeat")
    assert ran.parent is not None
    assert ran.parent.span_id == parent.get_span_context().span_id
    assert attrs(ran)["messaging.destination.name"] == "default"


def test_tracing_is_off_unless_configured_and_a_bad_setting_is_named() -> None:
    def settings_in_child(**env: str) -> subprocess.CompletedProcess[str]:
        code = ("import django, os; django.setup(); from django.conf import settings; from core import tracing; "
                "from opentelemetry import trace; "
                "print(settings.TRACING_ENABLED, tracing.setup('web'), type(trace.get_tracer_provider()).__name__)")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "true",
                                   "ENV_FILE": "", **env})

    # no OTEL_* variable: off, and no SDK provider is installed
    off = settings_in_child()
    assert off.stdout.split() == ["False", "False", "ProxyTracerProvider"], off.stderr
    # an exporter named (console: no collector needed here): on, with the SDK's provider
    on = settings_in_child(OTEL_TRACES_EXPORTER="console")
    assert on.stdout.split() == ["True", "True", "TracerProvider"], on.stderr
    # a typo stops the process and names the variable
    bad = settings_in_child(OTEL_TRACES_EXPORTER="jaegr")
    assert bad.returncode != 0
    assert "OTEL_TRACES_EXPORTER='jaegr'" in bad.stderr
    bad_sampler = settings_in_child(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318", OTEL_TRACES_SAMPLER="half")
    assert bad_sampler.returncode != 0
    assert "OTEL_TRACES_SAMPLER='half'" in bad_sampler.stderr


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_killed_workers_retry_is_a_new_span_in_the_same_trace(
        spans: InMemorySpanExporter, sender: Any, sink: Any) -> None:
    get_connection().flushdb()
    template = make_template()
    tracer = otel_trace.get_tracer("test", tracer_provider=tracing._provider)
    # given 60 messages caused by one signup request (its trace remembered for the workers)
    sink.state.delay = 0.05  # a slow mailbox server, so the kill lands mid-batch
    contacts = [make_contact(f"k{i}@example.com") for i in range(60)]
    with tracer.start_as_current_span("signup request") as cause:
        trace_id = tracing.current_trace_id()
        tracing.remember_cause(trace_id)
        with correlation_scope(trace_id):
            messages_queue(template=template, items=[QueueItem(c.pk, f"burst:{c.pk}") for c in contacts])
    assert set(Message.objects.values_list("correlation_id", flat=True)) == {trace_id}
    # and a worker process that exports its spans over OTLP to a loopback receiver
    with OtlpSink() as collector:
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        with worker_process("delivery", env=otlp) as worker:  # (messages_queue kicked a delivery job)
            # when the worker is killed mid-batch
            kill_when(worker, lambda: len(sink.received) >= 10 and bool(collector.spans()))
        assert 10 <= len(sink.received) < 60, "too late to kill mid-batch"
        before_kill = [s for s in collector.spans() if s.name == "message.send"]
    # then what it sent before dying is in the request's trace, under the request's span
    assert before_kill
    assert {(s.trace_id, s.parent_span_id) for s in before_kill} == {
        (trace_id, otel_trace.format_span_id(cause.get_span_context().span_id))}
    assert {s.service for s in before_kill} == {"leadflow"}
    in_flight = list(Message.objects.filter(status=MessageStatus.SENDING).values_list("pk", flat=True))
    assert in_flight
    # and when the sweeper hands the abandoned claims back and a new worker finishes the job
    assert delivery_sweep(now=timezone.now() + dt.timedelta(hours=1))["requeued"] == len(in_flight)
    sink.state.delay = 0
    delivery_run(sender_id=sender.pk, max_seconds=30)
    # then each retried message is a new span in the same trace, under the same request span
    retried = [s for s in spans.get_finished_spans() if s.name == "message.send"
               and attrs(s)["leadflow.message_id"] in in_flight]
    assert {attrs(s)["leadflow.message_id"] for s in retried} == set(in_flight)
    assert {hex_trace(s) for s in retried} == {trace_id}
    assert {s.parent.span_id for s in retried if s.parent} == {cause.get_span_context().span_id}
    exported_ids = {s.span_id for s in before_kill}
    assert not exported_ids & {otel_trace.format_span_id(s.context.span_id) for s in retried}
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENT}


@pytest.mark.django_db(transaction=True)
def test_no_span_holds_a_public_links_token(spans: InMemorySpanExporter, sender: Any, sink: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Public links carry a bearer token in their path: whoever reads a trace could unsubscribe the
    contact or confirm an opt-in. The request span names the route instead, also with the gunicorn
    RAW_URI (http.target), a query string, and a captured Referer (the preference page posting to itself)."""
    from campaigns import tracking
    from campaigns.delivery import delivery_run_batch
    from consent import optin
    from consent.models import OptInRequest

    get_connection().flushdb()
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "referer")
    # given a sent marketing message with a link, and a pending double opt-in
    contact = make_contact("ann@example.com")
    messages_queue(template=make_template(), items=[QueueItem(contact.pk, "news:ann")])
    delivery_run_batch(sender=sender)
    message = Message.objects.get()
    assert message.links
    request = OptInRequest.objects.create(contact=make_contact("bob@example.com"), created_at=timezone.now())

    def path_of(url: str) -> str:
        return "/" + url.split("://", 1)[1].split("/", 1)[1]

    links = {"open": path_of(tracking.open_url(message.pk)), "click": path_of(tracking.click_url(message.pk, 0)),
             "unsubscribe": path_of(tracking.unsubscribe_url(message.pk)),
             "confirm": path_of(optin.confirm_url(request.pk))}
    tokens = {name: path.rstrip("/").rsplit("/", 1)[1].removesuffix(".gif") for name, path in links.items()}
    assert all(len(token) > 10 for token in tokens.values())
    # when each public token route is requested as a browser and gunicorn would (RAW_URI is what
    # gunicorn sets: the raw target), GET and POST, and one mangled link that resolves to no route
    client = Client()
    for path in links.values():
        for method in (client.get, client.post):
            response = method(f"{path}?utm_source=x", RAW_URI=f"{path}?utm_source=x",
                              HTTP_REFERER=f"https://leadflow.example{path}")
            assert response.status_code < 500, (path, response.status_code)
        assert client.get(path).status_code < 500
    assert client.get(links["unsubscribe"] + "/extra").status_code == 404

    # then the requests were traced, each under its route, and no span name or attribute holds a token
    servers = [s for s in spans.get_finished_spans() if s.kind == otel_trace.SpanKind.SERVER]
    assert len(servers) == 4 * 3 + 1
    routes = {attrs(s).get("http.route") for s in servers}
    assert {"e/o/<str:token>.gif", "e/c/<str:token>", "e/u/<str:token>", "f/confirm/<str:token>"} <= routes
    for span in spans.get_finished_spans():
        texts = [span.name, *strings_in(span)]
        for name, token in tokens.items():
            for text in texts:
                assert token not in text, (name, span.name, text)
                assert "utm_source" not in text, (span.name, text)
    # (the route in their place)
    assert any(attrs(s).get("http.target") == "/e/u/<str:token>" for s in servers)
    assert any(attrs(s).get("http.url", "").endswith("/f/confirm/<str:token>") for s in servers)
    assert any(s.name == "GET e/u/<str:token>" for s in servers)
    assert any("http.request.header.referer" in attrs(s) for s in servers)
