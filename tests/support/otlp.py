"""A real OTLP/HTTP trace receiver, as a collector would be: it decodes each export request
(protobuf, `opentelemetry-proto`) and keeps the spans, and the raw bytes that carried them.

It can also stall (hold each export without answering) or be down (its port closed), to show
that the service keeps answering either way.
"""

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage
from opentelemetry.proto.trace.v1.trace_pb2 import Status

# What the service's tests set, so spans leave within a tenth of a second, not five.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}

KINDS = {
    SpanMessage.SPAN_KIND_INTERNAL: "internal",
    SpanMessage.SPAN_KIND_SERVER: "server",
    SpanMessage.SPAN_KIND_CLIENT: "client",
    SpanMessage.SPAN_KIND_PRODUCER: "producer",
    SpanMessage.SPAN_KIND_CONSUMER: "consumer",
}


@dataclass(frozen=True)
class ExportedSpan:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    error: bool
    links: list[tuple[str, str]]
    resource: dict[str, Any]
    start_ns: int
    end_ns: int

    @property
    def is_root(self) -> bool:
        return self.parent_span_id == ""


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass
class OtlpReceiver:
    port: int
    mode: str = "answer"  # "answer", or "stall": hold each export for a minute
    bodies: list[bytes] = field(default_factory=list)
    spans: list[ExportedSpan] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        """OTEL_EXPORTER_OTLP_ENDPOINT: the base URL; exporters add /v1/traces."""
        return f"http://127.0.0.1:{self.port}"

    def receive(self, path: str, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        decoded: list[ExportedSpan] = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                decoded.extend(
                    ExportedSpan(
                        name=span.name,
                        kind=KINDS.get(span.kind, "unspecified"),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes=_attributes(span.attributes),
                        error=span.status.code == Status.STATUS_CODE_ERROR,
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                        resource=resource,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                    )
                    for span in scope_spans.spans
                )
        with self.lock:
            self.paths.append(path)
            self.bodies.append(body)
            self.spans.extend(decoded)

    def received(self) -> list[ExportedSpan]:
        with self.lock:
            return list(self.spans)

    def wait_for(
        self, found: Callable[[list[ExportedSpan]], bool], timeout: float = 15
    ) -> list[ExportedSpan]:
        """Every span received, once `found` says what arrived is enough (or AssertionError)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.received()
            if found(spans):
                return spans
            time.sleep(0.05)
        raise AssertionError(f"the spans expected did not arrive within {timeout} s")

    def server_span(self, request_id: str, timeout: float = 15) -> ExportedSpan:
        """The server span of the request with this X-Request-ID."""

        def match(spans: list[ExportedSpan]) -> list[ExportedSpan]:
            return [
                s
                for s in spans
                if s.kind == "server" and s.attributes.get("tasks_api.request_id") == request_id
            ]

        return match(self.wait_for(lambda spans: bool(match(spans)), timeout))[0]

    def trace(
        self, root: ExportedSpan, expected: set[str], timeout: float = 15
    ) -> list[ExportedSpan]:
        """`root`'s direct children, once those named in `expected` arrived (all of a request's
        spans leave in one export: its server span ends last, after its children)."""

        def of_root(spans: list[ExportedSpan]) -> list[ExportedSpan]:
            return [s for s in spans if s.parent_span_id == root.span_id]

        def arrived(spans: list[ExportedSpan]) -> bool:
            return expected <= {s.name for s in of_root(spans)}

        return of_root(self.wait_for(arrived, timeout))


def _handler(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if receiver.mode == "stall":
                time.sleep(60)
                return
            receiver.receive(self.path, body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def otlp_receiver(mode: str = "answer") -> Iterator[OtlpReceiver]:
    """A receiver on a free loopback port, for the length of the `with`."""
    receiver = OtlpReceiver(0, mode=mode)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.port = server.server_address[1]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
