"""The OTLP protobuf encoding of exported spans, written directly as bytes.

Imported only when tracing is on (service.tracing). The SDK's OTLP/HTTP exporter encodes a
batch by building protobuf message objects, a span, then each attribute and its value, and
copying every span three times more as the objects nest (scope, resource, request): ~24 µs a
span, in the exporter's thread, which holds the GIL the event loop needs. With every request
sampled and three spans a request, that thread was an eighth of the worker's CPU. This module
writes the same bytes from the protobuf wire format instead, ~6 µs a span: each attribute's
key and value are encoded once and kept (a statement's attributes repeat from request to
request), and a resource's and a scope's encodings are the SDK's own, made once.

The exporter stays the SDK's (its endpoint and headers from OTEL_EXPORTER_OTLP_*, its retries,
its size bound, its metrics); only its `encode_spans` is this module's, which it calls by that
module-level name. A span this module does not write itself (events, links, a status with a
message, a value that is not a string, a boolean, an integer or a float, dropped counts) is
encoded by the SDK, alone, and its bytes take their place, so no span is ever encoded
differently. The output is the SDK's to the byte: opentelemetry-exporter-otlp-proto-http's
minor version is pinned (pyproject.toml), and tests/integration/test_library_seams.py fails
when the exporter's `export` changes or when a batch encodes differently from the SDK's.
"""

import struct
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.exporter.otlp.proto.http import trace_exporter
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, StatusCode

# Encoded attributes kept at most; past it, forgotten at once (request ids never repeat).
KEPT_ATTRIBUTES = 4096
# And the encodings of this many resource and scope pairs (a process has one or two).
KEPT_HEADERS = 64
_INT64 = range(-(2**63), 2**63)

# Each field's tag: (field number << 3) | wire type (0 varint, 1 64-bit, 2 bytes, 5 32-bit).
_KIND = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
_STATUS = {  # Status (field 15), its code (field 3); the SDK always writes one
    StatusCode.UNSET: b"\x7a\x00",
    StatusCode.OK: b"\x7a\x02\x18\x01",
    StatusCode.ERROR: b"\x7a\x02\x18\x02",
}
# flags (field 16, fixed32): the SDK says whether the parent is remote, always.
_LOCAL_PARENT = b"\x85\x01" + struct.pack("<I", 0x100)
_REMOTE_PARENT = b"\x85\x01" + struct.pack("<I", 0x300)
_fixed64 = struct.Struct("<Q").pack
_double = struct.Struct("<d").pack

_attributes: dict[tuple[str, type, object], bytes] = {}
# A resource's head and tail, then a scope's: see _headers.
_Headers = tuple[bytes, bytes, bytes, bytes]
_known_headers: dict[tuple[Resource, InstrumentationScope | None], _Headers] = {}


class _Encoded:
    """What the exporter's `encode_spans` returns, as far as the exporter uses it."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def SerializePartialToString(self) -> bytes:  # noqa: N802 - the protobuf method's name
        return self._data


def encode_in_exporter() -> None:
    """Have the SDK's OTLP/HTTP span exporter encode its batches here."""
    trace_exporter.encode_spans = encode_spans  # type: ignore[attr-defined,assignment]


def encode_spans(spans: Sequence[ReadableSpan]) -> _Encoded:
    return _Encoded(encode(spans))


def encode(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest: the spans by resource, then by scope, in the order each
    is first met, as the SDK groups them."""
    grouped: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
    headers: dict[tuple[Resource, InstrumentationScope | None], _Headers] = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope or None
        by_scope = grouped.setdefault(resource, {})
        if scope not in by_scope:
            by_scope[scope] = []
            headers[resource, scope] = _headers(resource, scope, span)
        by_scope[scope].append(_span(span))
    request = []
    for resource, by_scope in grouped.items():
        scope_spans = []
        for scope, encoded in by_scope.items():
            _, _, scope_head, scope_tail = headers[resource, scope]
            scope_spans.append(_field(b"\x12", scope_head + b"".join(encoded) + scope_tail))
        head, tail, _, _ = headers[resource, next(iter(by_scope))]
        request.append(_field(b"\x0a", head + b"".join(scope_spans) + tail))
    return b"".join(request)


def _headers(
    resource: Resource, scope: InstrumentationScope | None, span: ReadableSpan
) -> _Headers:
    """The fields of a ResourceSpans before its scope spans and after them, and of a ScopeSpans
    before and after its spans (fields go in their numbers' order): the SDK's own encoding,
    made once for each resource and scope (a process has one or two)."""
    known = _known_headers.get((resource, scope))
    if known is None:
        (resource_spans,) = sdk_encode([span]).resource_spans
        (scope_spans,) = resource_spans.scope_spans
        resource_head = ResourceSpans(resource=resource_spans.resource)
        scope_head = ScopeSpans(scope=scope_spans.scope)
        known = (
            resource_head.SerializeToString() if resource_spans.HasField("resource") else b"",
            ResourceSpans(schema_url=resource_spans.schema_url).SerializeToString(),
            scope_head.SerializeToString() if scope_spans.HasField("scope") else b"",
            ScopeSpans(schema_url=scope_spans.schema_url).SerializeToString(),
        )
        if len(_known_headers) >= KEPT_HEADERS:
            _known_headers.clear()
        _known_headers[resource, scope] = known
    return known


def _span(span: ReadableSpan) -> bytes:
    """One span, as the `spans` field of its ScopeSpans."""
    try:
        encoded = _written(span)
    except Exception:  # an unhashable value, say: the SDK then says what it makes of it
        encoded = None
    if encoded is None:  # what this module does not write: the SDK encodes it
        (resource_spans,) = sdk_encode([span]).resource_spans
        encoded = resource_spans.scope_spans[0].spans[0].SerializeToString()
    return _field(b"\x12", encoded)


def _written(span: ReadableSpan) -> bytes | None:
    """The span's fields in field order, or None for a span the SDK should encode."""
    if (
        span.events
        or span.links
        or span.status.description
        or span.dropped_attributes
        or span.dropped_events
        or span.dropped_links
    ):
        return None
    context = span.context
    if context is None:
        return None
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        state = ",".join(f"{key}={value}" for key, value in context.trace_state.items())
        parts.append(_field(b"\x1a", state.encode()))
    parent = span.parent
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_field(b"\x2a", span.name.encode()))
    parts.append(_KIND[span.kind])
    if span.start_time:
        parts += (b"\x39", _fixed64(span.start_time))
    if span.end_time:
        parts += (b"\x41", _fixed64(span.end_time))
    for key, value in (span.attributes or {}).items():
        attribute = _attribute(key, value)
        if attribute is None:
            return None
        parts.append(attribute)
    parts.append(_STATUS[span.status.status_code])
    parts.append(_REMOTE_PARENT if parent is not None and parent.is_remote else _LOCAL_PARENT)
    return b"".join(parts)


def _attribute(key: str, value: object) -> bytes | None:
    """A KeyValue, as a span's `attributes` field; None for a value left to the SDK."""
    kind = type(value)
    known = _attributes.get((key, kind, value))
    if known is not None:
        return known
    # Exact types for numbers (a bool is an int); a str subclass is written as its str, as
    # the protobuf runtime writes it.
    if isinstance(value, str):
        any_value = _field(b"\x0a", str.encode(value))
    elif type(value) is bool:
        any_value = b"\x10\x01" if value else b"\x10\x00"
    elif type(value) is int and value in _INT64:
        any_value = b"\x18" + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)  # two's complement
    elif type(value) is float:
        any_value = b"\x21" + _double(value)
    else:
        return None
    encoded = _field(b"\x4a", _field(b"\x0a", key.encode()) + _field(b"\x12", any_value))
    if len(_attributes) >= KEPT_ATTRIBUTES:
        _attributes.clear()
    _attributes[key, kind, value] = encoded
    return encoded


def _field(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _varint(len(data)) + data


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
