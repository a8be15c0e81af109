"""The server span: one per request, started by the envelope when tracing is on.

Named `{method} {route template}` once routing has chosen a route (`GET` alone before, or
when none matched): never the raw path, whose ids would make every span name unique. It holds
the request's method, scheme, protocol version, the socket's peer and the service's request
id; at the end the route template, the status, and the error status for a 5xx. Never the
path or the query string (which carries sealed cursors and, by mistake, sometimes a token),
nor any header but `traceparent`/`tracestate`, which are read, not recorded.

A caller's W3C `traceparent` (exactly one, well-formed) continues its trace; with
TRACING_TRUST_TRACEPARENT=false (an untrusted edge) the request starts a trace of its own,
linked to the caller's, so a client can neither join a trace nor decide whether it is sampled.
"""

from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, SpanKind, get_current_span
from opentelemetry.trace import set_span_in_context as in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import Scope

from service.tracing import Tracing

if TYPE_CHECKING:
    from service.span_recorder import StartedSpan

_PROPAGATOR = TraceContextTextMapPropagator()
# http.request.method is one of these, or _OTHER (semantic conventions, HTTP spans).
_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


class ServerSpan:
    """The request's server span, current (so the request's other spans and log lines
    belong to it) from `start` until `end`."""

    __slots__ = ("_method", "_span", "_token", "_tracing")

    def __init__(self, tracing: Tracing, scope: Scope, request_id: str) -> None:
        method: str = scope["method"]
        known = method in _KNOWN_METHODS
        self._method = method if known else "HTTP"
        self._tracing = tracing
        caller = _caller(scope)
        parent: Context | None = caller
        links: list[Link] = []
        if caller is not None and not tracing.trust_incoming:
            parent = None
            links.append(Link(get_current_span(caller).get_span_context()))
        attributes: dict[str, str | int] = {
            "http.request.method": method if known else "_OTHER",
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
            "tasks_api.request_id": request_id,
        }
        if not known:
            attributes["http.request.method_original"] = method[:32]
        client = scope.get("client")
        if client:
            attributes["client.address"] = client[0]
        self._span: StartedSpan = tracing.recorder.start(
            self._method, SpanKind.SERVER, parent, attributes, links
        )
        self._token = otel_context.attach(in_context(NonRecordingSpan(self._span.context)))

    def end(self, route: str | None, status: int) -> None:
        span = self._span
        attributes: dict[str, str | int] = {"http.response.status_code": status}
        if route is not None:
            span.name = f"{self._method} {route}"
            attributes["http.route"] = route
        # A 4xx is the client's error, not the server's (the conventions).
        error_type = str(status) if status >= 500 else None
        self._tracing.recorder.end(span, attributes, error_type)
        otel_context.detach(self._token)


def _caller(scope: Scope) -> Context | None:
    """The caller's trace context, from exactly one well-formed `traceparent` (and its
    `tracestate`), or None."""
    parents = [v for k, v in scope["headers"] if k == b"traceparent"]
    if len(parents) != 1:
        return None
    carrier = {"traceparent": parents[0].decode("latin-1")}
    states = [v.decode("latin-1") for k, v in scope["headers"] if k == b"tracestate"]
    if states:
        carrier["tracestate"] = ",".join(states)
    context = _PROPAGATOR.extract(carrier, context=Context())
    return context if get_current_span(context).get_span_context().is_valid else None
