"""A loopback OTLP/HTTP trace receiver: what a Collector's `otlp` receiver does with traces, kept
in memory, for the tests of worker processes and for bench/tracing_cost.py.

Follows the OpenTelemetry Protocol specification, "OTLP/HTTP"
(https://opentelemetry.io/docs/specs/otlp/#otlphttp): the exporter POSTs a protobuf-encoded
`ExportTraceServiceRequest` (opentelemetry/proto/collector/trace/v1/trace_service.proto) to
`/v1/traces` with `Content-Type: application/x-protobuf`, optionally `Content-Encoding: gzip`; a
full success is HTTP 200 with a protobuf `ExportTraceServiceResponse` in the same content type.
Anything else here is a 404 (wrong path) or 415 (JSON encoding, which we do not need)."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str  # 32 hex digits
    span_id: str
    parent_span_id: str  # "" for a root
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace id, span id)
    service: str


@dataclass
class Received:
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _decode(request: ExportTraceServiceRequest, *, keep: bool) -> tuple[list[ReceivedSpan], int]:
    spans: list[ReceivedSpan] = []
    count = 0
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            count += len(scope_spans.spans)
            if not keep:
                continue
            for s in scope_spans.spans:
                spans.append(ReceivedSpan(
                    name=s.name, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                    parent_span_id=s.parent_span_id.hex(),
                    attributes={a.key: _value(a.value) for a in s.attributes},
                    links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in s.links),
                    service=str(resource.get("service.name", ""))))
    return spans, count


class OtlpSink:
    """`with OtlpSink() as sink:` then point `OTEL_EXPORTER_OTLP_ENDPOINT` at `sink.url`.
    `keep=False` only counts spans (a benchmark's receiver should cost as little as possible)."""

    def __init__(self, *, keep: bool = True) -> None:
        self.received = Received()
        self.span_count = 0
        received, sink = self.received, self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802  http.server's naming
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                if self.headers.get("Content-Type", "").split(";")[0].strip() != PROTOBUF:
                    self.send_error(415, "only application/x-protobuf")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding", "") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                spans, count = _decode(request, keep=keep)
                with received.lock:
                    received.spans.extend(spans)
                    received.requests += 1
                    sink.span_count += count
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", PROTOBUF)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> OtlpSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> OtlpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def spans(self) -> list[ReceivedSpan]:
        with self.received.lock:
            return list(self.received.spans)
