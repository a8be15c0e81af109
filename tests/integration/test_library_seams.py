"""Rule: where the service overrides a library that offers no public hook, the names it relies
on are checked here, so an upgrade that moves one fails loudly, naming it, instead of quietly
switching off a bound.

Six modules do this, and only they (ruff's SLF001 and TID251 say so for the rest):
service/http/server.py (uvicorn's httptools protocol: the receipt deadline, the header limit,
the connection bound) and service/http/cors.py (Starlette's CORS preflight answer). Each
library is pinned to the minor version these were written against (pyproject.toml).

service/http/rate_limit_memory.py repeats limits' in-memory sliding window counting as one
synchronous call (the same counting, without the walk over every key that followed each count)
and sweeps the undocumented `storage` and `expirations` mappings itself; limits is pinned to
its minor too. The functions it repeats are hashed here, and a sequence of counts across
windows must come out as limits' own.

service/http/rate_limit_redis.py runs limits' own two sliding-window Lua scripts (RedisBridge's
undocumented class attributes) as the bodies of one script of its own, on the keys limits'
RedisStorage uses: the scripts' hashes are recorded here, and a count made there must be the
count RedisStorage reads.

service/span_recorder.py, the fifth, makes the request path's spans without the OpenTelemetry
SDK's tracer: it repeats what `Tracer.start_span` decides (trace and span ids, the sampler,
the trace flags) and builds the SDK's `ReadableSpan` itself. The two SDK functions are hashed
here, and a span it records must be exported exactly as the SDK's tracer would have exported
it, whatever the sampler; the SDK is pinned to its minor.

service/span_encoding.py, the sixth, writes the OTLP protobuf of an exported batch itself, in
place of the encoder the SDK's OTLP/HTTP exporter calls by a module-level name: `export` is
hashed here, and a batch holding every kind of span must come out as the SDK's encoder writes
it, to the byte, and be what the exporter sends.

One more relies on public APIs, but on a rule behind them: service/http/rate_limits.py computes
`RateLimit`'s remaining count and Retry-After from the sliding window counter's two counters,
so `limits`' counting rule (a hit is allowed while floor(weighted count) < limit; the weight
falls with the last window's remaining time) is checked here, on both storages.
"""

import asyncio
import hashlib
import inspect
import logging
import time
from typing import Any

import pytest
import starlette
import uvicorn
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.storage.redis.bridge import RedisBridge
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import trace_exporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, Tracer, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from redis.asyncio import ConnectionPool, Redis
from starlette.middleware.cors import CORSMiddleware
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from service import span_encoding
from service.http.cors import ProblemCORSMiddleware
from service.http.rate_limit_memory import SweptMemoryStorage
from service.http.rate_limit_redis import RedisCounters
from service.http.server import BoundedHttpProtocol
from service.span_recorder import SpanRecorder
from tests.support.otlp import otlp_receiver
from tests.support.rate_limits import key_prefix, shared_redis

# What service/http/server.py overrides or calls on uvicorn's protocol.
PROTOCOL_METHODS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_message_complete",
    "on_response_complete",
    "send_400_response",
    "_unset_keepalive_if_required",
    "_unsupported_upgrade_warning",
)
# What it reads on a protocol instance, once constructed.
PROTOCOL_ATTRIBUTES = ("parser", "server_state", "connections", "loop", "cycle", "pipeline")
# What it reads and sets on the request/response cycle, to answer a body that broke.
CYCLE_ATTRIBUTES = ("scope", "response_started", "disconnected", "message_event")
# The constructor uvicorn calls, whose parameters the override passes on.
PROTOCOL_PARAMETERS = ["self", "config", "server_state", "app_state", "_loop"]
# service/http/server.py replaces data_received with a copy that counts what arrives: when
# uvicorn changes its own, the copy must be compared with it again.
DATA_RECEIVED_SHA256 = "010a7ae59a5d3b1a5e7326ce246878568629d126a076d8af5ba10cab040fae43"
PREFLIGHT_SHA256 = "286290a83dec72a02db859f14a1e94dc072b4af1af815e3a60430fce408088be"
# limits' Lua scripts for the sliding window counter, which rate_limit_redis.py sends itself.
REDIS_SCRIPT_SHA256 = {
    "SCRIPT_ACQUIRE_SLIDING_WINDOW": (
        "3a1548d4c00dfe04fdd8feabfb60849afcb5caf4158d8082671588c5f5d871e6"
    ),
    "SCRIPT_SLIDING_WINDOW": "a86dd8837d03ab9e10a5151c47d00eaca4396dd262698a4269c4e6e8ac5b96f7",
}
# limits' in-memory counting, which service/http/rate_limit_memory.py repeats minus the walk.
MEMORY_STORAGE_SHA256 = {
    "incr": "dcf483c93da99f9b464f64bee856c1e7851a4a11e2a4c876d0e8d07e78d4809f",
    "get": "6fcbeaa5f3c04858aaa546499ff3a3adfdef4d1ef9ff14990ac078a0e669c530",
    "acquire_sliding_window_entry": (
        "c016de522ad07dd7bec72a2afc808394edce5ab4437b7925c611ba21e8ed8583"
    ),
    "get_sliding_window": "f2069084e85350984ad9ac85bca4026f83ab7b90bc2960877f878c1e2a17001c",
    "_get_sliding_window_info": "6712986c826371f34d1ee59cc75d62e69da931f3955f2acaab315db3bb26ae01",
    "sliding_window_keys": "595126619bfe8b9181fee8f273b5641da3ae168d6c2c3906ca35ce7126062010",
}


def _source_sha256(function: object) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()  # type: ignore[arg-type]


def _moved(what: str) -> str:
    return (
        f"uvicorn {uvicorn.__version__}: {what}. service/http/server.py relies on it; review "
        "that module against this uvicorn before raising the pin in pyproject.toml"
    )


@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_uvicorn_still_has_each_protocol_method_the_server_module_uses(name: str) -> None:
    assert callable(getattr(HttpToolsProtocol, name, None)), _moved(
        f"HttpToolsProtocol.{name} is gone"
    )
    assert name in BoundedHttpProtocol.__dict__ or name in HttpToolsProtocol.__dict__


def test_uvicorn_still_builds_its_protocol_with_the_same_parameters() -> None:
    parameters = list(inspect.signature(HttpToolsProtocol.__init__).parameters)
    assert parameters == PROTOCOL_PARAMETERS, _moved(f"the constructor takes {parameters}")


def test_uvicorn_protocol_instances_still_have_the_attributes_the_server_module_reads() -> None:
    loop = asyncio.new_event_loop()
    try:
        config = Config(app=lambda *_: None)
        config.load()
        protocol = HttpToolsProtocol(config, ServerState(), {}, loop)
        missing = [name for name in PROTOCOL_ATTRIBUTES if not hasattr(protocol, name)]
    finally:
        loop.close()
    assert missing == [], _moved(f"a protocol has no {', '.join(missing)}")
    assert hasattr(ServerState(), "default_headers"), _moved("ServerState.default_headers is gone")


def test_uvicorn_cycles_still_have_what_the_server_module_reads_and_sets() -> None:
    loop = asyncio.new_event_loop()
    try:
        cycle = RequestResponseCycle(
            scope={},  # type: ignore[typeddict-item]
            transport=None,  # type: ignore[arg-type]
            flow=None,  # type: ignore[arg-type]
            logger=logging.getLogger("uvicorn.error"),
            access_logger=logging.getLogger("uvicorn.access"),
            access_log=False,
            default_headers=[],
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=True,
            on_response=lambda: None,
        )
        missing = [name for name in CYCLE_ATTRIBUTES if not hasattr(cycle, name)]
    finally:
        loop.close()
    assert missing == [], _moved(f"a RequestResponseCycle has no {', '.join(missing)}")


def test_uvicorn_data_received_is_the_one_the_copy_was_taken_from() -> None:
    assert _source_sha256(HttpToolsProtocol.data_received) == DATA_RECEIVED_SHA256, _moved(
        "HttpToolsProtocol.data_received changed; compare it with BoundedHttpProtocol's copy, "
        "then record its new sha256 here"
    )


def test_starlette_still_answers_preflights_through_the_overridden_method() -> None:
    assert "preflight_response" in ProblemCORSMiddleware.__dict__
    signature = list(inspect.signature(CORSMiddleware.preflight_response).parameters)
    message = (
        f"starlette {starlette.__version__}: CORSMiddleware.preflight_response changed; "
        "service/http/cors.py overrides it: review it, then record the new sha256 here"
    )
    assert signature == ["self", "request_headers"], message
    assert _source_sha256(CORSMiddleware.preflight_response) == PREFLIGHT_SHA256, message


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_limits_counts_a_sliding_window_as_the_rate_limits_module_assumes(storage: str) -> None:
    async def scenario() -> None:
        connections = ConnectionPool.from_url(shared_redis()) if storage == "redis" else None
        store: MemoryStorage | RedisStorage = MemoryStorage()
        if connections is not None:
            options: dict[str, Any] = {"connection_pool": connections}
            store = RedisStorage(
                f"async+{shared_redis()}",
                implementation="redispy",
                key_prefix=key_prefix(),
                **options,
            )
        limiter = SlidingWindowCounterRateLimiter(store)
        item = RateLimitItemPerSecond(3, 100)
        # Three allowed, then refused: a refusal is not counted.
        assert [await limiter.hit(item, "k") for _ in range(5)] == [True] * 3 + [False] * 2
        last, last_ttl, this, this_ttl = await store.get_sliding_window(item.key_for("k"), 100)
        assert (last, this) == (0, 3)
        assert last_ttl == 0
        # This window's counter lives two windows; it becomes the last one after the first.
        assert 0 < this_ttl - 100 <= 100
        if connections is not None:
            await connections.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("name", sorted(MEMORY_STORAGE_SHA256))
def test_limits_still_counts_in_memory_as_the_swept_storage_repeats(name: str) -> None:
    assert _source_sha256(getattr(MemoryStorage, name)) == MEMORY_STORAGE_SHA256[name], (
        f"limits: MemoryStorage.{name} changed; service/http/rate_limit_memory.py repeats its "
        "counting: compare the two, then record the new sha256 here"
    )


def test_limits_memory_storage_still_keeps_counters_where_the_sweep_looks() -> None:
    storage = SweptMemoryStorage()
    assert storage.count("k", 5, 60)[0]
    _previous, current = storage.sliding_window_keys("k", 60, time.time())
    assert dict(storage.storage) == {current: 1}, "limits: MemoryStorage.storage moved"
    assert set(storage.expirations) == {current}, "limits: MemoryStorage.expirations moved"
    assert hasattr(storage, "locks"), "limits: MemoryStorage.locks moved"


def test_a_count_in_memory_is_the_count_limits_memory_storage_makes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same requests at the same moments, across three windows: each allowed or refused as
    limits' own limiter decides, with the counters limits' storage reads."""
    clock = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    ours = SweptMemoryStorage()
    theirs = MemoryStorage()
    limiter = SlidingWindowCounterRateLimiter(theirs)
    item = RateLimitItemPerSecond(4, 10)
    key = item.key_for("k")

    async def theirs_count() -> tuple[bool, tuple[int, float, int, float]]:
        allowed = await limiter.hit(item, "k")
        return allowed, await theirs.get_sliding_window(key, 10)

    async def scenario() -> None:
        for moment in [0, 1, 2, 3, 4, 9.5, 10.5, 11, 12, 13.2, 14, 17, 19.9, 21, 22, 23, 35, 36]:
            clock[0] = 1_000_000.0 + moment
            expected = await theirs_count()
            assert ours.count(key, 4, 10) == expected, f"at {moment} s"
        await theirs.reset()

    asyncio.run(scenario())


@pytest.mark.parametrize("name", sorted(REDIS_SCRIPT_SHA256))
def test_limits_still_has_the_redis_scripts_the_redis_counters_send(name: str) -> None:
    script = getattr(RedisBridge, name, None)
    assert isinstance(script, bytes), f"limits: RedisBridge.{name} is gone"
    assert hashlib.sha256(script).hexdigest() == REDIS_SCRIPT_SHA256[name], (
        f"limits: RedisBridge.{name} changed; service/http/rate_limit_redis.py sends it and "
        "reads its reply: review both, then record the new sha256 here"
    )


def test_a_count_in_redis_is_the_count_limits_redis_storage_reads() -> None:
    async def scenario() -> None:
        prefix = key_prefix()
        connections = ConnectionPool.from_url(shared_redis())
        counters = RedisCounters(connections, prefix)
        options: dict[str, Any] = {"connection_pool": connections}
        limits_storage = RedisStorage(
            f"async+{shared_redis()}", implementation="redispy", key_prefix=prefix, **options
        )
        limiter = SlidingWindowCounterRateLimiter(limits_storage)
        item = RateLimitItemPerSecond(3, 100)
        key = item.key_for("k")

        # Counted here, then by limits itself: one budget of three.
        ours = [await counters.hit(key, 3, 100) for _ in range(2)]
        theirs = await limiter.hit(item, "k")
        refused, window = await counters.hit(key, 3, 100)

        assert [allowed for allowed, _ in ours] == [True, True]
        assert theirs is True
        assert refused is False
        assert window[0::2] == (0, 3)  # no last window yet; three in this one
        assert window == pytest.approx(await limits_storage.get_sliding_window(key, 100), abs=0.1)
        # Many at once share round trips, and each gets its own answer.
        answers = await asyncio.gather(*(counters.hit(f"{key}/{n}", 1, 100) for n in range(50)))
        assert [allowed for allowed, _ in answers] == [True] * 50
        await counters.close()
        await connections.aclose()

    asyncio.run(scenario())


def test_the_redis_counters_load_the_scripts_again_after_redis_forgets_them() -> None:
    async def scenario() -> None:
        connections = ConnectionPool.from_url(shared_redis())
        counters = RedisCounters(connections, key_prefix())
        assert (await counters.hit("k", 5, 100))[0] is True
        client = Redis(connection_pool=connections)
        await client.script_flush()  # as a restarted Redis would have

        allowed, window = await counters.hit("k", 5, 100)

        assert allowed is True
        assert window[2] == 2
        await counters.close()
        await connections.aclose()

    asyncio.run(scenario())


# What service/span_recorder.py repeats of the OpenTelemetry SDK's tracer, and the constructor
# of the span it builds.
SDK_SPAN_SHA256 = {
    "Tracer.start_span": "3cd55e4a9e148e4117820b4da05af6cfc6dcff6f8d8e9809ccce5c85a5aea2d0",
    "ReadableSpan.__init__": "9fd2a50ea3546706293d58954ebb2381d81d76f2bb94b9bbf1a674b2dd095d4e",
}
CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
SAMPLERS = {
    "always_on": ALWAYS_ON,
    "always_off": ALWAYS_OFF,
    # The caller's trace id is kept at a ratio of 0.9, dropped at 0.5.
    "traceidratio 0.9": TraceIdRatioBased(0.9),
    "traceidratio 0.5": TraceIdRatioBased(0.5),
    "parentbased_traceidratio": ParentBased(TraceIdRatioBased(0.5)),
}


class _Pipeline:
    """A tracer provider whose spans land in memory: its SDK tracer, and a span recorder on
    the same processor."""

    def __init__(self, sampler: Sampler) -> None:
        resource = Resource({"service.name": "seam", "process.pid": 1})
        self.provider = TracerProvider(sampler=sampler, resource=resource, shutdown_on_exit=False)
        self.exported = InMemorySpanExporter()
        processor = SimpleSpanProcessor(self.exported)
        self.provider.add_span_processor(processor)
        scope = InstrumentationScope("seam", "1.0")
        self.tracer = self.provider.get_tracer(scope.name, scope.version)
        self.recorder = SpanRecorder(self.provider, processor, scope)

    def encoded(self) -> list[ExportTraceServiceRequest]:
        """What the OTLP exporter would send of each span, but its own id and its times."""
        requests = []
        for span in self.exported.get_finished_spans():
            request = encode_spans([span])
            (encoded,) = request.resource_spans[0].scope_spans[0].spans
            for varying in ("span_id", "start_time_unix_nano", "end_time_unix_nano"):
                encoded.ClearField(varying)
            if encoded.parent_span_id:  # the caller's span, or one of this pipeline's own
                caller = encoded.parent_span_id == bytes.fromhex(CALLER_SPAN_ID)
                encoded.parent_span_id = b"the caller's" if caller else b"this request's"
            requests.append(request)
        return requests


def _caller(sampled: bool) -> Context:
    flags = "01" if sampled else "00"
    carrier = {"traceparent": f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-{flags}", "tracestate": "v=1"}
    return TraceContextTextMapPropagator().extract(carrier, context=Context())


@pytest.mark.parametrize("name", sorted(SDK_SPAN_SHA256))
def test_the_sdk_still_makes_spans_as_the_span_recorder_repeats(name: str) -> None:
    owner, function = name.split(".")
    source = getattr({"Tracer": Tracer, "ReadableSpan": ReadableSpan}[owner], function)
    assert _source_sha256(source) == SDK_SPAN_SHA256[name], (
        f"opentelemetry-sdk {sdk_version}: {name} changed; review service/span_recorder.py "
        "against it before raising the pin in pyproject.toml"
    )


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("caller_sampled", [True, False])
def test_a_recorded_request_is_exported_as_the_sdks_tracer_would_export_it(
    sampler: str, caller_sampled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server span continuing a caller's trace, with a failed statement under it: made by
    the SDK's tracer in one pipeline and by the recorder in another, the same sampler deciding,
    they must encode alike (attribute values cut to OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT too)."""
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "24")
    opening: dict[str, str | int] = {"http.request.method": "GET", "tasks_api.request_id": "r"}
    closing: dict[str, str | int] = {"http.route": "/t/{id}", "http.response.status_code": 503}
    statement = {"db.system.name": "postgresql", "db.query.text": "SELECT " + "x, " * 20}

    by_sdk = _Pipeline(SAMPLERS[sampler])
    server = by_sdk.tracer.start_span(
        "GET", context=_caller(caller_sampled), kind=SpanKind.SERVER, attributes=opening
    )
    child = by_sdk.tracer.start_span(
        "SELECT t", context=set_span_in_context(server), kind=SpanKind.CLIENT, attributes=statement
    )
    child.set_attribute("error.type", "ValueError")
    child.set_status(StatusCode.ERROR)
    child.end()
    server.update_name("GET /t/{id}")
    server.set_attributes({**closing, "error.type": "503"})
    server.set_status(StatusCode.ERROR)
    server.end()

    by_recorder = _Pipeline(SAMPLERS[sampler])
    started = by_recorder.recorder.start("GET", SpanKind.SERVER, _caller(caller_sampled), opening)
    if started.context.trace_flags.sampled:
        by_recorder.recorder.record(
            "SELECT t",
            SpanKind.CLIENT,
            started.context,
            started_ns=time.time_ns(),
            ended_ns=time.time_ns(),
            attributes=statement,
            error=ValueError("a message never recorded"),
        )
    started.name = "GET /t/{id}"
    by_recorder.recorder.end(started, closing, "503")

    assert started.context.trace_flags == server.get_span_context().trace_flags
    assert by_recorder.encoded() == by_sdk.encoded()
    assert len(by_sdk.encoded()) == (2 if server.get_span_context().trace_flags.sampled else 0)


def test_a_recorded_root_span_is_exported_as_the_sdks_tracer_would_export_it() -> None:
    by_sdk, by_recorder = _Pipeline(ALWAYS_ON), _Pipeline(ALWAYS_ON)
    made_span = by_sdk.tracer.start_span("GET", kind=SpanKind.SERVER, attributes={"a": 1})
    made_span.end()
    started = by_recorder.recorder.start("GET", SpanKind.SERVER, None, {"a": 1})
    by_recorder.recorder.end(started, {}, None)

    # Sampled, and W3C's "random trace id" flag, which a JWKS fetch's traceparent carries.
    assert started.context.trace_flags == made_span.get_span_context().trace_flags == 0x03

    (made,), (recorded,) = by_sdk.encoded(), by_recorder.encoded()
    for request in (made, recorded):  # a new trace each: its id differs
        span = request.resource_spans[0].scope_spans[0].spans[0]
        assert len(span.trace_id) == 16
        assert not span.parent_span_id
        span.ClearField("trace_id")
    assert recorded == made


def test_recorded_spans_and_the_sdks_share_one_resource_and_scope_in_an_export() -> None:
    """The recorder hashes the resource once; an export still groups its spans with the
    tracer's (a token's verification) under one resource and one scope."""
    pipeline = _Pipeline(ALWAYS_ON)
    pipeline.tracer.start_span("verify token").end()
    pipeline.recorder.end(pipeline.recorder.start("GET", SpanKind.SERVER, None, {}), {}, None)

    (resource_spans,) = encode_spans(pipeline.exported.get_finished_spans()).resource_spans
    (scope_spans,) = resource_spans.scope_spans
    assert [span.name for span in scope_spans.spans] == ["verify token", "GET"]


# service/span_encoding.py, the sixth: the SDK's OTLP/HTTP span exporter calls the
# module-level `encode_spans` in `export`, which the service points at its own encoding.
EXPORTER_EXPORT_SHA256 = "0968825cd72fb0bde91a72f0607e4e71d622816a087107f6a7053d679aa02f8e"
SCHEMA = "https://opentelemetry.io/schemas/1.26.0"


def test_the_otlp_exporter_still_encodes_through_the_name_the_span_encoding_replaces() -> None:
    assert "encode_spans(spans).SerializePartialToString()" in inspect.getsource(
        OTLPSpanExporter.export
    )
    assert _source_sha256(OTLPSpanExporter.export) == EXPORTER_EXPORT_SHA256, (
        f"opentelemetry-exporter-otlp-proto-http {sdk_version}: OTLPSpanExporter.export "
        "changed; review service/span_encoding.py against it before raising the pin"
    )


class _Named(str):
    """A str of a kind of its own, as SQLAlchemy's quoted_name is."""

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"not what the protobuf runtime writes"


def _every_kind_of_span() -> list[ReadableSpan]:
    """A batch with what the service's spans hold, and with all that only the SDK encodes:
    two resources and three scopes (schema URLs too), events, links, a status message, dropped
    attributes, an array, bytes, an integer past 64 bits, an empty name, every span kind, and
    one attribute as an integer, a boolean and a float in turn."""
    exported = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exported)
    first = TracerProvider(
        resource=Resource({"service.name": "seam", "process.pid": 1}), shutdown_on_exit=False
    )
    second = TracerProvider(
        resource=Resource({"service.name": "other"}, SCHEMA),
        span_limits=SpanLimits(max_attributes=2),
        shutdown_on_exit=False,
    )
    for provider in (first, second):
        provider.add_span_processor(processor)
    scope = InstrumentationScope("seam", "1.0")
    recorder = SpanRecorder(first, processor, scope)
    tracer = first.get_tracer(scope.name, scope.version)
    schema_tracer = first.get_tracer("with a schema", "2", schema_url=SCHEMA)
    limited = second.get_tracer("limited")

    opening: dict[str, str | int] = {"http.request.method": "GET", "client.address": "::1"}
    server = recorder.start("GET", SpanKind.SERVER, _caller(sampled=True), opening)

    def child(
        name: str, kind: SpanKind, attributes: dict[str, Any], error: Exception | None
    ) -> None:
        now = time.time_ns()
        recorder.record(
            name,
            kind,
            server.context,
            started_ns=now,
            ended_ns=now,
            attributes=attributes,
            error=error,
        )

    child("wait for a pooled connection", SpanKind.INTERNAL, {}, None)
    values: dict[str, Any] = {
        "text": "été ✓",
        "a str of a kind of its own": _Named("tasks"),
        "empty": "",
        "zero": 0,
        "negative": -(2**63),
        "largest": 2**63 - 1,
        "one": 1,
        "true": True,
        "false": False,
        "float": 1.0,
        "nan": float("nan"),
    }
    child("SELECT tasks", SpanKind.CLIENT, values, ValueError())
    recorder.end(server, {"http.response.status_code": 500}, "500")

    with_event = tracer.start_span("verify token", kind=SpanKind.PRODUCER)
    with_event.add_event("fetched", {"n": 1})
    with_event.set_status(Status(StatusCode.ERROR, "a message"))
    with_event.end()
    linked = schema_tracer.start_span(
        "", kind=SpanKind.CONSUMER, links=[Link(server.context, {"why": "retry"})]
    )
    linked.set_status(StatusCode.OK)
    linked.end()
    tracer.start_span("").end()
    unusual = tracer.start_span("unusual", attributes={"list": ("a", "b"), "bytes": b"\x00"})
    unusual.set_attribute("huge", 2**70)
    unusual.end()
    limited.start_span("dropped", attributes={"a": 1, "b": 2, "c": 3}).end()
    recorder.end(recorder.start("GET", SpanKind.SERVER, None, {"one": True}), {}, None)
    tracer.start_span("GET", attributes={"one": 1.0}).end()
    return list(exported.get_finished_spans())


def test_a_batch_is_encoded_as_the_sdk_encodes_it_to_the_byte() -> None:
    batch = _every_kind_of_span()
    assert span_encoding.encode(batch) == encode_spans(batch).SerializePartialToString()
    # Twice: the second time from what the first kept.
    assert span_encoding.encode(batch) == encode_spans(batch).SerializePartialToString()
    assert span_encoding.encode(batch[:2]) == encode_spans(batch[:2]).SerializePartialToString()


def test_the_exporter_sends_what_the_span_encoding_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace_exporter, "encode_spans", vars(trace_exporter)["encode_spans"])
    span_encoding.encode_in_exporter()
    batch = _every_kind_of_span()
    with otlp_receiver() as receiver:
        exporter = OTLPSpanExporter(endpoint=receiver.endpoint + "/v1/traces")
        assert exporter.export(batch) is SpanExportResult.SUCCESS
        exporter.shutdown()  # type: ignore[no-untyped-call]
    assert receiver.bodies == [encode_spans(batch).SerializePartialToString()]
