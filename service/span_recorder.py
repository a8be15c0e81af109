"""The request path's spans, recorded once finished, without the SDK's `Span` class.

Imported only when tracing is on (service.tracing). The SDK's span costs 20-30 µs to start and
end in CPython (a lock, its attribute checks, a copy of itself for the processor), and a
request has two or three: with every request sampled, that alone was a tenth of a request's
CPU. A request's server span, its statements and its waits for a connection are instead
recorded when they are over, as the SDK's own `ReadableSpan` (the type its span processors and
exporters take), handed to the batch span processor the SDK's `Span.end` would have handed
them to: 3-4 µs each. The rare spans (a token's verification, a JWKS fetch) still go through
the SDK's tracer; they are children of the span this module makes current, as of any other.

What the SDK decides, it still decides: its sampler (OTEL_TRACES_SAMPLER, asked once per
request, for the server span; the request's other spans follow that decision, as every
sampler the SDK ships would decide for them, so a trace is never kept in part), its id
generator, the resource, OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT. A span is handed to the processor
only when sampled; the batch processor ignores unsampled spans and does nothing at a span's
start, so neither is called for.

`ReadableSpan`'s constructor is public, though the SDK documents it as made by its own
tracer: opentelemetry-sdk's minor version is pinned (pyproject.toml), and
tests/integration/test_library_seams.py fails when what this module makes stops being what
the SDK's own tracer makes.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from time import time_ns

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    get_current_span,
)

Attributes = dict[str, str | int]
_ERROR = Status(StatusCode.ERROR)
_UNSET = Status(StatusCode.UNSET)


@dataclass(slots=True)
class StartedSpan:
    """A span under way: its context (current while it runs, so that what runs inside it,
    and the log lines written there, belong to it), and what it will be recorded with."""

    name: str
    kind: SpanKind
    context: SpanContext
    parent: SpanContext | None
    links: Sequence[Link]
    attributes: Mapping[str, str | int]
    started_ns: int


class SpanRecorder:
    """Starts and records this process's spans into one tracer provider's span processor."""

    __slots__ = ("_ids", "_max_length", "_processor", "_resource", "_sampler", "_scope")

    def __init__(
        self, provider: TracerProvider, processor: SpanProcessor, scope: InstrumentationScope
    ) -> None:
        self._processor = processor
        self._scope = scope
        self._sampler = provider.sampler
        self._ids = provider.id_generator
        self._resource = _HashedOnce(provider.resource)
        self._max_length = SpanLimits().max_attribute_length

    def start(
        self,
        name: str,
        kind: SpanKind,
        parent: Context | None,
        attributes: Attributes,
        links: Sequence[Link] = (),
    ) -> StartedSpan:
        """A span whose sampling the sampler decides, as the SDK's tracer would: a child of
        `parent`'s span (a caller's, from its `traceparent`), or the root of a new trace."""
        context = parent if parent is not None else Context()
        parent_span = get_current_span(context).get_span_context()
        ids = self._ids
        if parent_span.is_valid:
            trace_id = parent_span.trace_id
            random_id = parent_span.trace_flags.random_trace_id
            parent_of: SpanContext | None = parent_span
        else:
            trace_id = ids.generate_trace_id()
            random_id = ids.is_trace_id_random()
            parent_of = None
        result = self._sampler.should_sample(context, trace_id, name, kind, attributes, links)
        sampled = result.decision is Decision.RECORD_AND_SAMPLE  # Decision.is_sampled()
        flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
        if random_id:
            flags |= TraceFlags.RANDOM_TRACE_ID
        span_context = SpanContext(
            trace_id,
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=result.trace_state,
        )
        recorded = dict(result.attributes) if result.attributes else {}
        return StartedSpan(name, kind, span_context, parent_of, links, recorded, time_ns())

    def end(self, span: StartedSpan, attributes: Attributes, error_type: str | None) -> None:
        """Records `span`, ended now, with `attributes` added (when it was sampled)."""
        if span.context.trace_flags.sampled:
            span.attributes = {**span.attributes, **attributes}
            self._hand_over(span, time_ns(), error_type)

    def record(
        self,
        name: str,
        kind: SpanKind,
        parent: SpanContext,
        *,
        started_ns: int,
        ended_ns: int,
        attributes: Mapping[str, str | int],
        error: BaseException | None = None,
    ) -> None:
        """Records a finished child of `parent`, a sampled span (service.tracing's
        `sampled_parent`). An error is recorded by its type alone: its message (a database's,
        say) can quote the values a statement carried."""
        context = SpanContext(
            parent.trace_id,
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=parent.trace_flags,
            trace_state=parent.trace_state,
        )
        span = StartedSpan(name, kind, context, parent, (), attributes, started_ns)
        self._hand_over(span, ended_ns, None if error is None else type(error).__qualname__)

    def _hand_over(self, span: StartedSpan, ended_ns: int, error_type: str | None) -> None:
        # The span keeps the attributes it was given: a copy only where they change.
        attributes = span.attributes
        if error_type is not None:
            attributes = {**attributes, "error.type": error_type}
        limit = self._max_length
        if limit is not None:
            attributes = {
                key: value[:limit] if isinstance(value, str) else value
                for key, value in attributes.items()
            }
        self._processor.on_end(
            ReadableSpan(
                span.name,
                span.context,
                span.parent,
                self._resource,
                attributes,
                kind=span.kind,
                links=span.links,
                status=_UNSET if error_type is None else _ERROR,
                start_time=span.started_ns,
                end_time=ended_ns,
                instrumentation_scope=self._scope,
            )
        )


class _HashedOnce(Resource):
    """The same resource, hashed once. The exporter groups each batch's spans by resource, a
    dict lookup per span, and the SDK hashes a resource by writing its attributes as JSON each
    time: 5 µs a span. A resource is immutable, so its hash is too."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash
