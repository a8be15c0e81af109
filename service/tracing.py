"""Traces: OpenTelemetry, off unless an OTLP endpoint is configured.

Off (the default), nothing of the OpenTelemetry SDK is imported, and the request path pays one
`is None` test at each place a span would start. On (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set, OTEL_SDK_DISABLED not true, OTEL_TRACES_EXPORTER not
`none`), each worker process builds its own tracer provider: the SDK's batch span processor
and its OTLP/HTTP protobuf exporter (whose protobuf service.span_encoding writes), both
configured by OpenTelemetry's standard variables
(OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER/_ARG, OTEL_BSP_*,
OTEL_EXPORTER_OTLP_HEADERS, ...). Spans are exported from the processor's own thread, in
batches, so a slow or absent collector never slows or fails a request: when its queue is
full, spans are dropped.

The provider is the service's own, never the global one: FastAPI 0.165 switches on tracing of
its own as soon as a global provider is set (a second server span per request, recording the
query string); the app also turns FastAPI's telemetry off outright (service.main).

What the spans hold (and never: a token, a title, a cursor, a query string, a secret, a
password) is listed in docs/DEPLOY.md, "Traces".
"""

import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import (
    Span,
    SpanContext,
    StatusCode,
    Tracer,
    format_span_id,
    format_trace_id,
    get_current_span,
)

from service.config import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from service.span_recorder import SpanRecorder

SERVICE_NAME = "secure-tasks-api"
INSTRUMENTATION_SCOPE = "secure_tasks_api"
# At shutdown, queued spans are exported for this long at most.
SHUTDOWN_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Tracing:
    """This process's tracing: the recorder of the request path's spans (the server span,
    statements, waits for a connection), the SDK's tracer for the rare ones (a token's
    verification, a JWKS fetch), and whether a caller's `traceparent` continues its trace."""

    recorder: "SpanRecorder"
    tracer: Tracer
    trust_incoming: bool
    provider: "TracerProvider"

    def shutdown(self) -> None:
        """Export what is queued, then stop; waiting SHUTDOWN_SECONDS at most, so that a
        stalled collector cannot hold the worker's exit (the SDK would wait 30 s)."""
        exporting = threading.Thread(
            target=self.provider.shutdown, name="trace export at shutdown", daemon=True
        )
        exporting.start()
        exporting.join(SHUTDOWN_SECONDS)


def start_tracing(settings: Settings, service_version: str) -> Tracing | None:
    """This process's tracing, or None when it is off (then nothing of the SDK is imported)."""
    endpoint = settings.traces_endpoint()
    if endpoint is None:
        return None
    _otel_variables_from_dotenv()
    # Only now: importing the SDK costs start-up time and memory a service without
    # tracing should not pay.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope  # noqa: PLC0415

    from service.span_encoding import encode_in_exporter  # noqa: PLC0415 - it imports the SDK
    from service.span_recorder import SpanRecorder  # noqa: PLC0415 - it imports the SDK

    # OpenTelemetry's variables (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) win over these
    # defaults. Each worker is an instance of its own, so its spans can be told apart.
    detected = Resource.create()
    defaults: dict[str, Any] = {
        "service.name": SERVICE_NAME,
        "service.version": service_version,
        "service.instance.id": str(uuid.uuid4()),
        "process.pid": os.getpid(),
    }
    named = "OTEL_SERVICE_NAME" in os.environ or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = detected.merge(
        Resource(
            {
                key: value
                for key, value in defaults.items()
                if key not in detected.attributes or (key == "service.name" and not named)
            }
        )
    )
    # Shut down by the app's lifespan (Tracing.shutdown), within a bound, not at exit.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    encode_in_exporter()  # the same bytes as the SDK's encoding, a fourth of its CPU
    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))
    provider.add_span_processor(processor)
    scope = InstrumentationScope(INSTRUMENTATION_SCOPE, service_version)
    _add_trace_ids_to_logs()
    return Tracing(
        recorder=SpanRecorder(provider, processor, scope),
        tracer=provider.get_tracer(scope.name, scope.version),
        trust_incoming=settings.tracing_trust_traceparent,
        provider=provider,
    )


def _otel_variables_from_dotenv() -> None:
    """The SDK reads OpenTelemetry's variables from the process environment only; the
    service's settings read `.env` too. So OTEL_* lines of `.env` reach the SDK as well, the
    environment winning as it does for every setting."""
    if not Path(".env").is_file():
        return
    from dotenv import dotenv_values  # noqa: PLC0415 - pydantic-settings' own .env reader

    for name, value in dotenv_values(".env").items():
        if name.startswith("OTEL_") and value is not None:
            os.environ.setdefault(name, value)


class TraceIds(logging.Filter):
    """Adds the current span's trace and span ids to each log record written inside one, so
    that a JSON log line (service.http.logs) leads to its trace and back."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format_trace_id(context.trace_id)
            record.span_id = format_span_id(context.span_id)
        return True


def _add_trace_ids_to_logs() -> None:
    handlers = {
        handler
        for name in ("tasks_api", "service", "uvicorn", "psycopg")
        for handler in logging.getLogger(name).handlers
    }
    for handler in handlers:
        if not any(isinstance(f, TraceIds) for f in handler.filters):
            handler.addFilter(TraceIds())


def sampled_parent() -> SpanContext | None:
    """The current span's context when it is sampled (a child of it is to be recorded), else
    None: outside a traced request, or in one the sampler dropped."""
    context = get_current_span().get_span_context()
    return context if context.trace_flags.sampled else None


def failed(span: Span, error: BaseException) -> None:
    """Mark `span` failed by `error`'s type alone: an error's message (a database's, say) can
    quote the values a statement carried, so it is never recorded."""
    span.set_attribute("error.type", type(error).__qualname__)
    span.set_status(StatusCode.ERROR)
